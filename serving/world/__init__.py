"""Playing the service against a synthetic world that answers (`winback world play`).

Serving code that reads the world's answer key (`features.synthetic`): it exists to measure
the service against the truth, and nothing on the decision path imports it.
"""

from serving.world.play import TRUTH_FILE, PlayResult, WaveTruth, play_world

__all__ = ["TRUTH_FILE", "PlayResult", "WaveTruth", "play_world"]
