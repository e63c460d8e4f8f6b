"""`winback promote`: move `champion` to the challenger only when the evidence says so.

Both versions are evaluated on the same held-out contacts (the same split training uses) and
their learned policies compared with a paired bootstrap of the doubly robust estimate. The
challenger is promoted when its estimated value is higher and, by default, the lower bound of
its own interval is above the champion's estimate. The first model becomes champion, once it
has been evaluated on the data. Refused unless `--force`: a challenger trained on other data
(its recorded data fingerprint differs from DATA's), one that cannot be evaluated on DATA, and
a champion whose training labels reach into the challenger's test period. Models
without an offer-response part are compared by reactivation AUC on the last cutoff, with the
same rule: the challenger's one-sided 95% lower bound (bootstrap over the customers) must be
above the champion's AUC. Models that cannot be evaluated on the data (another feature set)
are promoted only with `--force`, recorded as "not comparable". Every comparison is recorded
as an MLflow run in the `winback-promotions` experiment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from features.settings import Settings, get_settings
from models.errors import FeatureMismatchError
from models.policy_model import PolicyModel
from models.pyfunc import load_policy_model
from training.errors import RegistryError, TrackingError
from training.evaluate import (
    held_out,
    reactivation_test,
    reactivation_test_mask,
    response_test_mask,
)
from training.inputs import TrainingInputs, load_training_inputs, protocol_args
from training.metrics import paired_auc_bootstrap, roc_auc
from training.policy_value import bootstrap_policies, deterministic_policy
from training.protocol import CutoffProtocol
from training.registry import CHALLENGER, CHAMPION, VersionInfo, alias_uri, get_alias, set_alias
from training.tracking import configure_tracking, data_fingerprint, use_experiment

PROMOTIONS_EXPERIMENT = "winback-promotions"
AUC_BOOTSTRAP = 200  # resamples of the test cutoff's customers for the AUC comparison


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
    frame = inputs.offer_response
    assert frame is not None
    # rows neither model trained on: the splits differ when the contacts share one timestamp
    # (a random split) and the two models were trained with different seeds
    test = response_test_mask(challenger, frame, seed) & response_test_mask(champion, frame, seed)
    if not test.any():
        raise RegistryError(
            "challenger and champion share no held-out contact on this data (their random "
            "train/test splits, from their training seeds, do not overlap)"
        )
    a = held_out(challenger, frame, seed, test)
    b = held_out(champion, frame, seed, test)
    opts = a.options
    pi_b_labels = np.where(np.isin(b.learned, opts), b.learned, challenger.control)
    pi_a = deterministic_policy(a.learned, opts)
    pi_b = deterministic_policy(pi_b_labels, opts)
    boot = bootstrap_policies(
        a.logged, {"challenger": pi_a, "champion": pi_b}, q=a.q, n_boot=500, seed=seed
    )
    values, diff = boot.values(), boot.difference("challenger", "champion")
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
    challenger: PolicyModel, champion: PolicyModel, inputs: TrainingInputs, seed: int
) -> tuple[float, float, float, float, tuple[float, float]]:
    """AUCs on the test cutoff, the challenger's 95% lower bound and a paired interval for the
    difference, from the same bootstrap resamples of the customers."""
    assert inputs.reactivation is not None
    frame = inputs.reactivation
    test = reactivation_test_mask(challenger, frame, seed) & reactivation_test_mask(
        champion, frame, seed
    )
    if not test.any():
        raise RegistryError("challenger and champion share no held-out reactivation row")
    _, pa, y = reactivation_test(challenger, frame, seed, test)
    _, pb, _ = reactivation_test(champion, frame, seed, test)
    if len(np.unique(y)) < 2:
        raise RegistryError("the test cutoff's labels have a single class: AUC is undefined")
    va, vb = roc_auc(y, pa), roc_auc(y, pb)
    boot_a, boot_d = paired_auc_bootstrap(y, pa, pb, AUC_BOOTSTRAP, seed)
    ok = np.isfinite(boot_a)  # a resample may hold one class only
    low = float(np.quantile(boot_a[ok], 0.05))  # one-sided 95%, like the policy's bound
    d_lo, d_hi = np.quantile(boot_d[ok], [0.025, 0.975])
    return va, low, vb, va - vb, (float(d_lo), float(d_hi))


def _refusal_of_data(model: PolicyModel, version: str, data: Path) -> str | None:
    """Why `model` must not be judged on `data`: trained on another data set (None: fine, or
    a model from before fingerprints were recorded)."""
    trained_on = model.metadata.get("data_fingerprint")
    if not trained_on:
        return None
    here = data_fingerprint(data)
    if here == trained_on:
        return None
    source = model.metadata.get("data_source", "another data set")
    return (
        f"v{version} was trained on {source} (data fingerprint {trained_on}), not on {data} "
        f"(fingerprint {here}): promote with the data it was trained on, or choose the data "
        "set's own model name (--model-name)"
    )


def _evaluation_gap(
    model: PolicyModel, inputs: TrainingInputs, seed: int
) -> tuple[str | None, float]:
    """Why `model` cannot be evaluated on `inputs` (None when it can), and its value there:
    the learned policy's DR value, else the reactivation AUC (NaN when not evaluated)."""
    from training.evaluate import Evaluation, evaluate_reactivation, evaluate_response

    ev = Evaluation()
    try:
        if model.reactivation is not None and inputs.reactivation is not None:
            evaluate_reactivation(model, inputs.reactivation, ev, seed)
        if model.has_response and inputs.offer_response is not None:
            evaluate_response(model, inputs.offer_response, seed, ev, None)
    except FeatureMismatchError as exc:
        return str(exc), float("nan")
    value = ev.metrics.get("policy_learned_dr", ev.metrics.get("reactivation_auc"))
    if value is None:
        return "nothing in the data that this model can be evaluated on " + (
            f"({ev.notes['reactivation_not_evaluated']})"
            if "reactivation_not_evaluated" in ev.notes
            else "(its parts and the data's frames do not meet)"
        ), float("nan")
    return None, float("nan") if value is None else float(value)


def _label_overlap(challenger: PolicyModel, champion: PolicyModel) -> str | None:
    """Whether the champion trained on labels inside the challenger's test period."""
    a, b = challenger.metadata.get("protocol"), champion.metadata.get("protocol")
    if not a or not b:
        return None
    pa, pb = CutoffProtocol.from_json(a), CutoffProtocol.from_json(b)
    if pb.cutoff_ts > pa.cutoff_ts:
        return (
            f"the champion's training labels run up to {pb.cutoff}, into the challenger's test "
            f"period (from {pa.cutoff}): it would be judged on rows it learned from"
        )
    return None


def promote(
    data: Path,
    seed: int = 0,
    force: bool = False,
    require_confidence: bool = True,
    settings: Settings | None = None,
    model_name: str | None = None,
) -> Comparison:
    """Evaluate challenger and champion on `data` and move `champion` if the rule allows.

    `model_name` (default `WINBACK_MODEL_NAME`) is the registered model whose aliases move.
    Raises RegistryError when the challenger was trained on other data or cannot be evaluated
    on `data`, unless `force`.
    """
    settings = settings or get_settings()
    name = model_name or settings.model_name
    configure_tracking(settings)
    challenger = get_alias(CHALLENGER, name)
    if challenger is None:
        raise RegistryError(f"no '{CHALLENGER}' version of {name}: run `winback train` first")
    a = _load(challenger)
    # bad data is an error before anything moves; the challenger's own protocol rebuilds its
    # test frame (its cutoff and horizon)
    inputs = load_training_inputs(data, **protocol_args(a.metadata))  # type: ignore[arg-type]
    refusal = _refusal_of_data(a, challenger.version, Path(data))
    gap, first_value = _evaluation_gap(a, inputs, seed)
    refusal = refusal or gap
    champion = get_alias(CHAMPION, name)
    already = champion is not None and champion.version == challenger.version
    if refusal is not None and not already and not force:
        raise RegistryError(
            f"{name} v{challenger.version} not promoted: {refusal} (--force promotes anyway)"
        )
    if champion is not None and already:
        result = Comparison(
            challenger.version,
            champion.version,
            "none",
            float("nan"),
            float("nan"),
            float("nan"),
            float("nan"),
            (float("nan"),) * 2,
            False,
            f"v{challenger.version} is already champion: nothing to compare",
        )
    elif champion is None:
        result = Comparison(
            challenger.version,
            None,
            "first model",
            first_value,
            float("nan"),
            float("nan"),
            float("nan"),
            (float("nan"),) * 2,
            True,
            "no champion yet: the first model becomes champion"
            + (f" (forced: {refusal})" if refusal else " (it was evaluated on the data)"),
        )
    else:
        b = _load(champion)
        nan = float("nan")
        try:
            overlap = _label_overlap(a, b)
            if overlap is not None:
                raise RegistryError(overlap)
            if refusal is not None:
                raise RegistryError(refusal)
            if a.has_response and b.has_response and inputs.offer_response is not None:
                criterion = "policy value (DR, held-out contacts)"
                va, va_low, vb, d, d_ci = _compare_policies(a, b, inputs, seed)
            elif inputs.reactivation is not None and a.reactivation and b.reactivation:
                criterion = "reactivation AUC (test cutoff)"
                va, va_low, vb, d, d_ci = _compare_reactivation(a, b, inputs, seed)
            else:
                raise RegistryError(
                    "challenger and champion share no part that this data can evaluate"
                )
        except (FeatureMismatchError, RegistryError) as exc:
            if not force:
                raise RegistryError(
                    f"cannot compare v{challenger.version} with champion v{champion.version} "
                    f"on {data}: {exc} (--force promotes without a comparison)"
                ) from None
            criterion, va, va_low, vb, d, d_ci = "not comparable", nan, nan, nan, nan, (nan, nan)
        better = va > vb and (va_low > vb or not require_confidence)
        if criterion == "not comparable":
            reason = "forced: the models could not be compared on this data"
        elif better:
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
        set_alias(CHAMPION, challenger.version, name)
    _record(result, data, settings, name)
    return result


def _record(result: Comparison, data: Path, settings: Settings, name: str) -> None:
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
                    "champion_uri": alias_uri(CHAMPION, name),
                    "model_name": name,
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
