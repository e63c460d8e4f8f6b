"""winback: training."""
