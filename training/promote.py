"""`winback promote`: move `champion` to the challenger only when the evidence says so.

Both versions are evaluated on the same held-out contacts (the same split training uses) and
their learned policies compared with a paired bootstrap of the doubly robust estimate. The
challenger is promoted when its estimated value is higher and, by default, the lower bound of
its own interval is above the champion's estimate. The first model becomes champion. Models
without an offer-response part are compared by reactivation AUC on the last cutoff. Every
comparison is recorded as an MLflow run in the `winback-promotions` experiment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from features.settings import Settings, get_settings
from models.policy_model import PolicyModel
from models.pyfunc import load_policy_model
from training.errors import RegistryError, TrackingError
from training.evaluate import Evaluation, evaluate_reactivation, held_out
from training.inputs import TrainingInputs, load_training_inputs
from training.policy_value import deterministic_policy, evaluate_policies, policy_difference
from training.registry import CHALLENGER, CHAMPION, VersionInfo, alias_uri, get_alias, set_alias
from training.tracking import configure_tracking, use_experiment

PROMOTIONS_EXPERIMENT = "winback-promotions"


@dataclass
class Comparison:
    """The outcome of a promotion check."""

    challenger: str
    champion: str | None
    criterion: str
    challenger_value: float
    challenger_ci_low: float
    champion_value: float
    difference: float
    difference_ci: tuple[float, float]
    promoted: bool
    reason: str


def _load(info: VersionInfo) -> PolicyModel:
    try:
        return load_policy_model(info.uri)
    except Exception as exc:
        raise RegistryError(f"{info.uri}: {exc}") from None


def _compare_policies(
    challenger: PolicyModel, champion: PolicyModel, inputs: TrainingInputs, seed: int
) -> tuple[float, float, float, float, tuple[float, float]]:
    assert inputs.offer_response is not None
    a = held_out(challenger, inputs.offer_response, seed)
    b = held_out(champion, inputs.offer_response, seed)
    opts = a.options
    pi_b_labels = np.where(np.isin(b.learned, opts), b.learned, challenger.control)
    pi_a = deterministic_policy(a.learned, opts)
    pi_b = deterministic_policy(pi_b_labels, opts)
    values = evaluate_policies(
        a.logged, {"challenger": pi_a, "champion": pi_b}, q=a.q, n_boot=500, seed=seed
    )
    diff = policy_difference(a.logged, pi_a, pi_b, q=a.q, n_boot=500, seed=seed)
    dr = values.xs("dr", level="estimator")
    estimate, ci_low = dr["estimate"].to_dict(), dr["ci_low"].to_dict()
    d = diff.loc["dr"].to_dict()
    return (
        float(estimate["challenger"]),
        float(ci_low["challenger"]),
        float(estimate["champion"]),
        float(d["difference"]),
        (float(d["ci_low"]), float(d["ci_high"])),
    )


def _compare_reactivation(
    challenger: PolicyModel, champion: PolicyModel, inputs: TrainingInputs
) -> tuple[float, float, float, float, tuple[float, float]]:
    assert inputs.reactivation is not None
    evs = []
    for model in (challenger, champion):
        ev = Evaluation()
        evaluate_reactivation(model, inputs.reactivation, ev)
        evs.append(ev.metrics.get("reactivation_auc", float("nan")))
    return evs[0], evs[0], evs[1], evs[0] - evs[1], (float("nan"), float("nan"))


def promote(
    data: Path,
    seed: int = 0,
    force: bool = False,
    require_confidence: bool = True,
    settings: Settings | None = None,
) -> Comparison:
    """Evaluate challenger and champion on `data` and move `champion` if the rule allows."""
    settings = settings or get_settings()
    configure_tracking(settings)
    challenger = get_alias(CHALLENGER)
    if challenger is None:
        raise RegistryError(
            f"no '{CHALLENGER}' version of winback-policy: run `winback train` first"
        )
    champion = get_alias(CHAMPION)
    if champion is None or champion.version == challenger.version:
        result = Comparison(
            challenger.version,
            None if champion is None else champion.version,
            "first model",
            float("nan"),
            float("nan"),
            float("nan"),
            float("nan"),
            (float("nan"),) * 2,
            True,
            "no champion yet: the first model becomes champion",
        )
    else:
        a, b = _load(challenger), _load(champion)
        inputs = load_training_inputs(data)
        if a.has_response and b.has_response and inputs.offer_response is not None:
            criterion = "policy value (DR, held-out contacts)"
            va, va_low, vb, d, d_ci = _compare_policies(a, b, inputs, seed)
            better = va > vb and (va_low > vb or not require_confidence)
        elif inputs.reactivation is not None and a.reactivation and b.reactivation:
            criterion = "reactivation AUC (test cutoff)"
            va, va_low, vb, d, d_ci = _compare_reactivation(a, b, inputs)
            better = va > vb
        else:
            raise RegistryError("challenger and champion share no part that this data can evaluate")
        if better:
            reason = "challenger is better" + (" with confidence" if require_confidence else "")
        elif force:
            reason = "forced: challenger was not better"
        else:
            reason = "kept champion: challenger not better" + (
                " with confidence (its lower bound is not above the champion's estimate)"
                if va > vb
                else ""
            )
        result = Comparison(
            challenger.version,
            champion.version,
            criterion,
            va,
            va_low,
            vb,
            d,
            d_ci,
            better or force,
            reason,
        )
    if result.promoted:
        set_alias(CHAMPION, challenger.version)
    _record(result, data, settings)
    return result


def _record(result: Comparison, data: Path, settings: Settings) -> None:
    try:
        use_experiment(PROMOTIONS_EXPERIMENT, settings)
        with mlflow.start_run(run_name=f"promote v{result.challenger}"):
            mlflow.log_params(
                {
                    "challenger": result.challenger,
                    "champion": result.champion or "",
                    "criterion": result.criterion,
                    "data": str(Path(data).resolve()),
                    "promoted": result.promoted,
                    "reason": result.reason,
                    "champion_uri": alias_uri(CHAMPION),
                }
            )
            metrics = {
                "challenger_value": result.challenger_value,
                "challenger_ci_low": result.challenger_ci_low,
                "champion_value": result.champion_value,
                "difference": result.difference,
                "difference_ci_low": result.difference_ci[0],
                "difference_ci_high": result.difference_ci[1],
            }
            mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
    except MlflowException as exc:
        raise TrackingError(f"cannot record the promotion: {exc.message}") from None
