"""`winback train`: one MLflow run that fits, evaluates, logs and registers a challenger."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from features.settings import Settings, get_settings
from models.policy_model import PolicyModel
from models.pyfunc import (
    ARTIFACT_FILE,
    ARTIFACT_KEY,
    WinbackPolicyPyfunc,
    code_paths,
    policy_signature,
)
from training import plots
from training.errors import TrackingError
from training.evaluate import (
    Evaluation,
    evaluate_reactivation,
    evaluate_response,
)
from training.fit import build_policy_model, fit_reactivation, fit_response
from training.inputs import TrainingInputs, load_training_inputs
from training.protocol import POPULATION_DEFAULT, CutoffProtocol
from training.registry import CHALLENGER, MODEL_NAME, set_alias, set_version_tags
from training.tracking import (
    DEFAULT_EXPERIMENT,
    configure_tracking,
    data_fingerprint,
    log_dataset,
    use_experiment,
)

# Stage lines ("fitting ...") at INFO; `winback train` shows them, a library caller may too.
log = logging.getLogger("winback.training")


@dataclass
class TrainResult:
    """What a training run produced."""

    run_id: str
    model_uri: str
    version: str
    trained: list[str]
    skipped: dict[str, str]
    evaluation: Evaluation
    metadata: dict[str, str] = field(default_factory=dict)
    model_name: str = MODEL_NAME
    protocol: CutoffProtocol | None = None


def fit_policy(
    inputs: TrainingInputs,
    seed: int,
    z: float | None = None,
    n_bags: int = 8,
    crossfit: bool = False,
    n_jobs: int = 1,
    compiled_eval: bool = False,
) -> tuple[PolicyModel, Evaluation]:
    """Fit what the inputs support, assemble the PolicyModel and evaluate it on held-out rows.

    `z` (the width of the decision rule's confidence bound) is chosen on validation contacts
    unless given (see `training.fit.fit_response`). `crossfit`: the response model trains on
    every contact, cross-fitted by customer, and is evaluated out of fold. `n_jobs`: worker
    processes scoring a customer sample's held-out rows partition by partition
    (`training.held_out_eval`); `compiled_eval`: they are scored with the boosters compiled
    (lleaves; the same metrics to within rounding, a few times faster).
    """
    react = None
    if inputs.reactivation is not None:
        log.info("fitting the reactivation model (%s rows)", f"{len(inputs.reactivation.data):,}")
        react = fit_reactivation(inputs.reactivation, seed)
    resp = None
    if inputs.offer_response is not None:
        log.info(
            "fitting offer response (%s contacts, %d bags) and its decision rule",
            f"{len(inputs.offer_response.data):,}",
            n_bags,
        )
        resp = fit_response(
            inputs.offer_response, seed, inputs.catalog, n_bags=n_bags, z=z, crossfit=crossfit
        )
    meta = {"seed": str(seed), "n_bags": str(n_bags), **inputs.data_notes}
    if resp is not None:
        meta.update({"response_learner": resp.learner_name, **resp.split})
    if react is not None:  # prefixed: both splits have e.g. train_rows
        meta.update({f"reactivation_{k}": v for k, v in react.split.items()})
        assert inputs.reactivation is not None
        if "protocol" in inputs.reactivation.spec.notes:  # evaluate and promote rebuild it
            meta["protocol"] = inputs.reactivation.spec.notes["protocol"]
    if inputs.held_out is not None:  # the fit's own frames hold no held-out row
        rows = inputs.held_out.rows
        if "reactivation_test_rows" in meta:
            meta["reactivation_test_rows"] = str(rows["reactivation"])
            n = rows["reactivation"]
            rate = inputs.held_out.positives / n if n else float("nan")
            meta["reactivation_test_positive_rate"] = f"{rate:.4f}" if n else ""
        if "test_rows" in meta:
            meta["test_rows"] = str(rows["offer_response"])
    if inputs.sample is not None:
        meta.update(inputs.sample.to_params())
    model = build_policy_model(
        inputs.catalog,
        resp,
        react,
        inputs.offer_response,
        inputs.reactivation,
        meta,
        z=resp.z if resp is not None else 1.96,
    )
    ev = Evaluation(notes=dict(inputs.data_notes))
    if inputs.protocol is not None:
        ev.notes["protocol"] = inputs.protocol.describe()
    if react is not None or resp is not None:
        log.info("evaluating on the held-out rows")
    held = inputs.held_out
    if held is not None:  # a customer sample: the held-out rows of every customer, kept apart
        ev.notes["customer_sample"] = _sample_note(inputs)
        assert inputs.sample is not None
        ev.tables["customer_sample"] = inputs.sample.strata
    if held is not None:  # every held-out row, partition by partition
        from training.held_out_eval import evaluate_held_out

        evaluate_held_out(
            model,
            held,
            ev,
            seed,
            inputs.ground_truth,
            n_jobs,
            reactivation=react is not None and inputs.reactivation is not None,
            response=resp is not None,
            compiled=compiled_eval,
        )
    elif react is not None and inputs.reactivation is not None:
        evaluate_reactivation(model, inputs.reactivation, ev, seed)
    if react is not None:
        ev.tables["feature_importance"] = react.model.feature_importances_.to_frame("gain")
    if resp is not None and held is None and inputs.offer_response is not None:
        evaluate_response(model, inputs.offer_response, seed, ev, inputs.ground_truth)
    if resp is not None:
        for name, auuc in resp.auuc_by_learner.items():
            ev.metrics[f"oob_auuc_{name}"] = auuc
        ev.metrics["decision_rule_z"] = resp.z
        if resp.rule_table is not None:
            ev.tables["decision_rule_choice"] = resp.rule_table
    return model, ev


def _sample_note(inputs: TrainingInputs) -> str:
    sample, held = inputs.sample, inputs.held_out
    assert sample is not None and held is not None
    return (
        f"fitted on a stratified (label x treatment) sample of {sample.sampled:,} of "
        f"{sample.population:,} customers (seed {sample.seed}); evaluated on every held-out "
        f"row ({held.rows['reactivation']:,} reactivation, {held.rows['offer_response']:,} "
        "contacts)"
    )


def _log_figures(ev: Evaluation, folder: Path) -> None:
    if ev.curves.get("qini"):
        mlflow.log_artifact(str(plots.qini_figure(ev.curves["qini"], folder / "qini.png")), "plots")
    if "reliability" in ev.curves:
        path = plots.reliability_figure(ev.curves["reliability"], folder / "reliability.png")
        mlflow.log_artifact(str(path), "plots")
    if "feature_importance" in ev.tables:
        imp = ev.tables["feature_importance"]["gain"]
        mlflow.log_artifact(str(plots.importance_figure(imp, folder / "importance.png")), "plots")
    for name, table in ev.tables.items():
        path = folder / f"{name}.csv"
        table.to_csv(path)
        mlflow.log_artifact(str(path), "tables")


def _input_example(model: PolicyModel, inputs: TrainingInputs) -> pd.DataFrame:
    """Five rows of the feature set's columns, categoricals as text (`lapse_state: "lapsed"`).

    Frames built from a data directory hold categoricals as codes into the feature set's
    vocabulary, imported ones as text; the pyfunc takes both, and the example (stored as JSON,
    read back as such) shows the text a caller would send. A code outside the vocabulary is
    missing.
    """
    frame = inputs.offer_response or inputs.reactivation
    assert frame is not None
    rows = frame.data.head(5)[list(model.feature_columns)]  # the model was built from this frame
    rows = rows.reset_index(drop=True)
    for col, vocab in model.vocabularies.items():
        s = rows[col]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            codes = s.to_numpy(dtype=float, na_value=np.nan)
            ok = np.isfinite(codes) & (codes >= 0) & (codes < len(vocab))
            text = [
                vocab[int(code)] if good else None for code, good in zip(codes, ok, strict=True)
            ]
            rows[col] = pd.Series(text, dtype=object)
    # pandas categoricals as plain text (MLflow's schema inference rejects the dtype)
    for col in rows.columns:
        if isinstance(rows[col].dtype, pd.CategoricalDtype):
            rows[col] = rows[col].astype(object).where(rows[col].notna(), None)
    return rows


def log_policy_model(
    model: PolicyModel, example: pd.DataFrame, folder: Path, name: str = MODEL_NAME
) -> tuple[str, str]:
    """Log the pyfunc, register a new version of `name`; return (model uri, version)."""
    path = folder / ARTIFACT_FILE
    joblib.dump(model, path)
    info = mlflow.pyfunc.log_model(
        name="winback-policy",
        python_model=WinbackPolicyPyfunc(),
        artifacts={ARTIFACT_KEY: str(path)},
        signature=policy_signature(model, example),
        input_example=example,
        code_paths=code_paths(),
        registered_model_name=name,
    )
    return info.model_uri, str(info.registered_model_version)


def train(
    source: Path,
    experiment: str = DEFAULT_EXPERIMENT,
    seed: int = 0,
    settings: Settings | None = None,
    horizon_days: int | None = None,
    z: float | None = None,
    n_bags: int = 8,
    cutoff: str | None = None,
    population: str = POPULATION_DEFAULT,
    model_name: str | None = None,
    sample_customers: int | None = None,
    crossfit: bool = False,
    n_jobs: int = 1,
    compiled_eval: bool = False,
) -> TrainResult:
    """Train on a data directory or frame(s), log everything to MLflow, register a challenger.

    `cutoff`, `horizon_days` and `population` set the reactivation protocol of a data
    directory (`training.protocol`); `model_name` (default `WINBACK_MODEL_NAME`) is the
    registered model the new version joins. `sample_customers`: fit on a seeded, stratified
    sample of that many customers, frames built partition by partition, evaluated on every
    held-out row (`training.sampled_inputs`); the sample is logged with the run.
    `crossfit`: the response model also learns from the latest contacts (a retraining after
    a played wave learns from it), cross-fitted by customer and evaluated out of fold
    (`training.fit.fit_response`). `n_jobs`: worker processes for the sampled pass and its
    evaluation (each holds one partition). `compiled_eval`: a sample's held-out rows are
    scored with compiled trees (`training.held_out_eval.scoring_model`).
    """
    settings = settings or get_settings()
    registered = model_name or settings.model_name
    log.info("loading %s and building the training frames", source)
    inputs = load_training_inputs(
        Path(source),
        horizon_days=horizon_days,
        cutoff=cutoff,
        population=population,
        sample_customers=sample_customers,
        seed=seed,
        n_jobs=n_jobs,
    )
    try:
        # a bad tracking URI or experiment fails here, not after minutes of fitting
        configure_tracking(settings)
        use_experiment(experiment, settings)
        return _train_on(
            inputs, source, seed, settings, registered, z, n_bags, crossfit, n_jobs, compiled_eval
        )
    finally:
        if inputs.held_out is not None:
            inputs.held_out.remove()


def _train_on(
    inputs: TrainingInputs,
    source: Path,
    seed: int,
    settings: Settings,
    registered: str,
    z: float | None,
    n_bags: int,
    crossfit: bool = False,
    n_jobs: int = 1,
    compiled_eval: bool = False,
) -> TrainResult:
    np.random.seed(seed)  # libraries that draw from the global generator stay reproducible
    model, ev = fit_policy(inputs, seed, z=z, n_bags=n_bags, crossfit=crossfit, n_jobs=n_jobs)
    fingerprint = data_fingerprint(Path(source))
    model.metadata["data_fingerprint"] = fingerprint
    model.metadata["data_source"] = str(Path(source).resolve())
    trained = [k for k in ("reactivation", "offer_response") if getattr(inputs, k) is not None]
    log.info("logging the run to MLflow and registering the model")
    try:
        with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            mlflow.log_params(
                {
                    "seed": seed,
                    "feature_set": model.feature_set_key,
                    "catalog_version": model.catalog_version,
                    "options": ",".join(model.options),
                    "default_option": model.default_option,
                    **{f"meta.{k}": v for k, v in model.metadata.items()},
                }
            )
            if "decision_rule_z" in model.metadata:
                # the decision rule's z in use: chosen on validation contacts unless given
                mlflow.log_params(
                    {"z": model.metadata["decision_rule_z"], "z_given": z is not None}
                )
            tags = {f"skipped.{k}": v for k, v in inputs.skipped.items()}
            tags |= {f"note.{k}": v for k, v in ev.notes.items()}
            mlflow.set_tags(tags | {"trained": ",".join(trained), "data_fingerprint": fingerprint})
            for name in trained:
                frame = getattr(inputs, name)
                log_dataset(frame.data, inputs.file_for(name), name, "training")
            mlflow.log_metrics({k: v for k, v in ev.metrics.items() if np.isfinite(v)})
            (folder / "feature_set.json").write_text(model.feature_set)
            mlflow.log_artifact(str(folder / "feature_set.json"))
            (folder / "evaluation.json").write_text(json.dumps(ev.to_json(), indent=2, default=str))
            mlflow.log_artifact(str(folder / "evaluation.json"))
            if inputs.sample is not None:
                (folder / "customer_sample.json").write_text(inputs.sample.to_json())
                mlflow.log_artifact(str(folder / "customer_sample.json"))
                mlflow.log_metric("sample_customers", inputs.sample.sampled)
            _log_figures(ev, folder)
            model.metadata["run_id"] = run.info.run_id
            example = _input_example(model, inputs)
            model_uri, version = log_policy_model(model, example, folder, registered)
        set_alias(CHALLENGER, version, registered)
        set_version_tags(
            version,
            {
                "feature_set": model.feature_set_key,
                "catalog_version": model.catalog_version,
                "trained": ",".join(trained),
                "seed": str(seed),
                "data_fingerprint": fingerprint,
                **({"cutoff": inputs.protocol.cutoff} if inputs.protocol else {}),
            },
            registered,
        )
    except MlflowException as exc:
        raise TrackingError(f"MLflow: {exc.message}") from None
    return TrainResult(
        run.info.run_id,
        model_uri,
        version,
        trained,
        inputs.skipped,
        ev,
        model.metadata,
        registered,
        inputs.protocol,
    )
