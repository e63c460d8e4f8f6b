"""winback: serving."""
