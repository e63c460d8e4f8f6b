"""A synthetic win-back world with a known answer key (see docs/synthetic-world.md).

`generate_world(n, seed)` draws customers, orders, friction, consent and past randomized
win-back campaigns; `write_world` writes them as a data directory plus `ground_truth.parquet`.
`TrueResponseModel` gives the true conversion probability of every option, so a closed-loop
simulation can draw outcomes for new decisions. Training code must never read the truth.
"""

from features.synthetic.generate import SyntheticWorld, generate_world, write_world
from features.synthetic.truth import CustomerState, TrueResponseModel

__all__ = ["CustomerState", "SyntheticWorld", "TrueResponseModel", "generate_world", "write_world"]
