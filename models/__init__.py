"""winback: models."""
