"""The MLflow pyfunc that packages a `PolicyModel` as `winback-policy`.

`mlflow.pyfunc.load_model(...).predict(df)` (and so `mlflow models serve` and
`mlflow.pyfunc.spark_udf`) returns, per row, `p_<option>`, `value_<option>`, `p_reactivation`,
`best_offer` and `best_value` (model only, no guardrails). Its input is the feature set's own
columns, as the data has them: a Hillstrom model takes `zip_code` as "Urban", not as a code. Our
own API skips the pyfunc wrapper and its input checks: `load_policy_model` returns the
`PolicyModel`, whose `score` calls the LightGBM boosters on a numpy matrix.

The package ships its code: the `models` package (`code_paths()`, all the winback code the
pickles refer to; it imports nothing from `features`, `training` or `serving`) is copied into
the model's `code/` folder, and MLflow puts it on `sys.path` before unpickling. So an
environment built from the model's own `requirements.txt` alone (`mlflow models serve
--env-manager virtualenv`, a Spark cluster, a fresh venv) loads and predicts without winback
installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import AnyType, ColSpec, Schema

from models.errors import ModelsError
from models.policy_model import PolicyModel

ARTIFACT_KEY = "policy"
ARTIFACT_FILE = "policy.joblib"


class ModelLoadError(ModelsError):
    """A registered model could not be found, downloaded or read."""

    code = "model_load"


class WinbackPolicyPyfunc(PythonModel):
    """Pyfunc wrapper: loads the pickled PolicyModel from the model's artifacts."""

    def load_context(self, context: Any) -> None:
        self.policy: PolicyModel = joblib.load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return self.policy.predict_frame(model_input)


def code_paths() -> list[str]:
    """The code `log_model` ships with the package: this `models` package, as a folder."""
    return [str(Path(__file__).resolve().parent)]


def policy_signature(policy: PolicyModel, example: pd.DataFrame) -> ModelSignature:
    """The pyfunc's signature, inferred from raw feature-set rows and the policy's output.

    Columns with a vocabulary (text categoricals) are declared `Any`: MLflow's `string` type
    rejects a pandas `category` column ("Can not safely convert category to <U0"), which is how
    the frames store them, and `predict_frame` checks the values against the vocabulary itself
    (unknown ones score as missing, as in training). Numeric columns keep their inferred types.
    """
    inferred = infer_signature(example, policy.predict_frame(example))
    assert isinstance(inferred.inputs, Schema)
    columns = [
        ColSpec(AnyType(), spec.name, required=spec.required)
        if isinstance(spec, ColSpec) and spec.name in policy.vocabularies
        else spec
        for spec in inferred.inputs.inputs
    ]
    return ModelSignature(inputs=Schema(columns), outputs=inferred.outputs)


def load_policy_model(model_uri: str) -> PolicyModel:
    """Download a registered `winback-policy` (any models:/ or runs:/ URI) and unpickle it."""
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    except (MlflowException, OSError) as exc:
        message = getattr(exc, "message", str(exc))
        raise ModelLoadError(f"model_uri {model_uri!r}: cannot load: {message}") from None
    candidates = list(local.rglob(ARTIFACT_FILE))
    if not candidates:
        raise ModelLoadError(f"model_uri {model_uri!r}: not a winback-policy package")
    try:
        policy = joblib.load(candidates[0])
    except Exception as exc:  # a corrupt or incompatible pickle is "model unavailable"
        raise ModelLoadError(f"model_uri {model_uri!r}: unreadable model: {exc}") from None
    if not isinstance(policy, PolicyModel):
        raise ModelLoadError(f"model_uri {model_uri!r}: holds {type(policy).__name__}")
    return policy
