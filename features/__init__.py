"""winback: features."""
