"""The registered `winback-policy` as the API's and batch scorer's `Scorer`.

The package is loaded once (by alias, e.g. `models:/winback-policy@champion`) and its boosters
are called directly on the feature matrix: no pyfunc input checks, no DataFrame per request.
The value the engine ranks by is the model's conservative decision value (the best single
option's value plus the lower confidence bound of each option's gain over it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from features.settings import Settings, get_settings
from models.errors import ModelsError
from models.policy_model import PolicyModel
from models.pyfunc import load_policy_model
from serving.errors import ModelUnavailableError
from serving.settings import ServingSettings, get_serving_settings

FloatMatrix = npt.NDArray[np.float64]


class PolicyScorer:
    """Adapter from PolicyModel to the engine's Scorer protocol."""

    def __init__(self, model: PolicyModel, version: str) -> None:
        self.model = model
        self._version = version

    @property
    def option_ids(self) -> Sequence[str]:
        return self.model.options

    @property
    def version(self) -> str:
        return self._version

    @property
    def feature_set_key(self) -> str:
        return self.model.feature_set_key

    def score(self, features: FloatMatrix) -> tuple[FloatMatrix, FloatMatrix]:
        s = self.model.score(features)
        return s.p, s.decision_value


def _version_label(model_uri: str) -> str:
    """`winback-policy/7` for `models:/winback-policy@champion` (alias resolved now)."""
    if not model_uri.startswith("models:/"):
        return model_uri
    ref = model_uri.removeprefix("models:/")
    name, sep, alias = ref.partition("@")
    if not sep:
        return ref
    try:
        mv = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return ref
    return f"{name}/{mv.version}"


def mlflow_scorer_loader(
    settings: Settings | None = None, serving: ServingSettings | None = None
) -> Callable[[str], PolicyScorer]:
    """A ScorerLoader reading from winback's MLflow store (tracking URI from settings).

    With `WINBACK_MODEL_BACKEND=lleaves` the boosters are compiled once at load (cached by
    model text under `WINBACK_COMPILED_CACHE_DIR`); scores are identical to 1e-9.
    """
    import mlflow

    def load(model_uri: str) -> PolicyScorer:
        mlflow.set_tracking_uri((settings or get_settings()).resolved_tracking_uri())
        cfg = serving or get_serving_settings()
        try:
            model = load_policy_model(model_uri)
            if cfg.model_backend == "lleaves":
                from models.compiled import compile_policy_model

                model = compile_policy_model(model, cfg.compiled_cache_dir)
        except ModelsError as exc:
            raise ModelUnavailableError(str(exc)) from None
        # the backend changes how trees are evaluated, not the model: decisions record the
        # registry version either way, so batch and API decisions stay identical
        return PolicyScorer(model, _version_label(model_uri))

    return load
