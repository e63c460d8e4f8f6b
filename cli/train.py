"""Commands that train, evaluate and promote a registered policy model (`winback-policy`, or
the data set's own name: `--model-name` / `WINBACK_MODEL_NAME`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.output import console, fail
from features.errors import FeaturesError
from models.errors import ModelsError
from training.errors import TrainingError

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(no_args_is_help=True)
SEED_MAX = 2**32 - 1  # numpy's and LightGBM's seeds are unsigned 32-bit

KEY_METRICS = (
    "reactivation_auc",
    "reactivation_log_loss",
    "reactivation_brier",
    "reactivation_ece",
    "reactivation_lift_top_decile",
    "learned_share_of_oracle",
    "share_deviating_from_best_single",
    "decision_rule_z",
)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:,.4f}"
    return str(v)


def _table(title: str, df: pd.DataFrame) -> None:
    from cli.tables import print_frame  # fits the console; counts as integers

    print_frame(console, title, df)


def _print_evaluation(ev: object) -> None:
    import pandas as pd

    metrics = getattr(ev, "metrics", {})
    tables = getattr(ev, "tables", {})
    shown = {k: metrics[k] for k in KEY_METRICS if k in metrics}
    if shown:
        _table("key metrics", pd.Series(shown, name="value").rename_axis("metric").to_frame())
    for name in (
        "reactivation",
        "uplift",
        "policy_value",
        "learned_minus_best_single",
        "policy_value_slices",
        "true_value",
        "decision_rule_choice",
    ):
        if name in tables:
            _table(name.replace("_", " "), tables[name])


ModelName = Annotated[
    str | None,
    typer.Option(
        "--model-name",
        help="registered model name, one per data set (default: WINBACK_MODEL_NAME, or "
        "winback-policy)",
    ),
]


def _print_frames(result: object) -> None:
    """Who is in each frame and why: the protocol, then rows and positive rate per frame."""
    from rich.table import Table

    protocol = getattr(result, "protocol", None)
    meta: dict[str, str] = getattr(result, "metadata", {})
    if protocol is not None:
        console.print(f"[bold]cutoff[/] {protocol.reason}", highlight=False)
        console.print(protocol.describe(), highlight=False)
    if "reactivation_train_rows" in meta:
        rows = {
            "train (origins)": (
                meta.get("reactivation_train_rows", ""),
                meta.get("reactivation_train_positive_rate", ""),
            ),
            "validation": (
                meta.get("reactivation_validation_rows", ""),
                meta.get("reactivation_validation_positive_rate", ""),
            ),
            "test (cutoff)": (
                meta.get("reactivation_test_rows", ""),
                meta.get("reactivation_test_positive_rate", ""),
            ),
        }
        table = Table(title="reactivation frames")
        for col in ("frame", "rows", "buy again"):
            table.add_column(col, justify="left" if col == "frame" else "right")
        for frame, (n, rate) in rows.items():
            shown = f"{float(rate):.1%}" if rate else "—"
            table.add_row(frame, f"{int(n):,}" if n else "—", shown)
        console.print(table)
    for part in ("train", "validation"):
        if f"reactivation_{part}_sample" in meta:
            sample = meta[f"reactivation_{part}_sample"]
            console.print(f"{part} rows sampled: {sample}", highlight=False)
    if "margin_assumed" in meta:
        console.print(f"[yellow]margin assumed:[/] {meta['margin_assumed']}", highlight=False)


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="data directory, frame directory or frame file")],
    experiment: Annotated[str, typer.Option(help="MLflow experiment")] = "winback",
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="seed of every random choice")] = 0,
    cutoff: Annotated[
        str | None,
        typer.Option(
            "--cutoff",
            help="DATE: predict who buys within --horizon-days after it; every training label "
            "ends before it, and the model is tested on its labels when the data reaches "
            "(default: the latest date whose labels the data holds)",
        ),
    ] = None,
    horizon_days: Annotated[
        int | None,
        typer.Option("--horizon-days", min=1, help="the question's horizon N (default 90)"),
    ] = None,
    population: Annotated[
        str,
        typer.Option(
            "--population",
            help="who the reactivation frames hold: all (every known customer) or lapsing "
            "(no order for 90+ days)",
        ),
    ] = "all",
    model_name: ModelName = None,
    bags: Annotated[
        int, typer.Option(min=2, help="bootstrap bags of the response learner (uncertainty)")
    ] = 8,
    sample_customers: Annotated[
        int | None,
        typer.Option(
            "--sample-customers",
            min=1,
            help="fit on a seeded (--seed) sample of N customers, stratified by label x "
            "treatment; frames are built partition by partition and every held-out row is "
            "evaluated (for data larger than memory; the sample is logged with the run)",
        ),
    ] = None,
    crossfit: Annotated[
        bool,
        typer.Option(
            "--crossfit",
            help="train the response model on every contact, the latest too, cross-fitted by "
            "customer (evaluation and promote score held-out contacts out of fold): for "
            "retraining after each played wave, which otherwise would not learn from it",
        ),
    ] = False,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            min=1,
            help="with --sample-customers: worker processes building partitions side by side "
            "(each holds one partition in memory; the result does not depend on it)",
        ),
    ] = 1,
    compiled_eval: Annotated[
        bool,
        typer.Option(
            "--compiled-eval",
            help="with --sample-customers: score the held-out rows with the boosters compiled "
            "(lleaves, the 'compiled' extra; the same metrics to within rounding, faster on "
            "millions of rows; without lleaves LightGBM scores them, with a warning)",
        ),
    ] = False,
) -> None:
    """Train what the data supports, log the run to MLflow and register a challenger."""
    from cli.progress import stage_lines
    from training.pipeline import train as run_training

    try:
        with console.status("training") as status, stage_lines(console, "winback.training", status):
            result = run_training(
                data,
                experiment=experiment,
                seed=seed,
                horizon_days=horizon_days,
                n_bags=bags,
                cutoff=cutoff,
                population=population,
                model_name=model_name,
                sample_customers=sample_customers,
                crossfit=crossfit,
                n_jobs=jobs,
                compiled_eval=compiled_eval,
            )
    except (TrainingError, FeaturesError, ModelsError) as exc:
        fail(str(exc))
        return
    _print_frames(result)
    if "customer_sample" in result.evaluation.notes:
        console.print(f"[bold]sample[/] {result.evaluation.notes['customer_sample']}")
        _table("customer sample by stratum", result.evaluation.tables["customer_sample"])
    for part, why in result.skipped.items():
        console.print(f"[yellow]skipped[/] {part}: {why}", highlight=False)
    if "reactivation_not_evaluated" in result.evaluation.notes:
        note = result.evaluation.notes["reactivation_not_evaluated"]
        console.print(f"[yellow]not evaluated[/] reactivation: {note}", highlight=False)
    _print_evaluation(result.evaluation)
    name = result.model_name
    console.print(
        f"[green]registered[/] {name} v{result.version} as 'challenger' "
        f"(run {result.run_id}; trained: {', '.join(result.trained)}; data fingerprint "
        f"{result.metadata.get('data_fingerprint', '')})",
        highlight=False,
    )
    if result.protocol is not None:
        at = result.protocol.cutoff
        uri = f"models:/{name}/{result.version}"
        console.print(
            f"scores as of {at}: winback features materialize {data} --as-of {at} --model "
            f"{uri}  (or WINBACK_MODEL_URI={uri} winback score {data} --as-of {at} --out FILE)",
            highlight=False,
        )


@app.command()
def evaluate(
    model_uri: Annotated[str, typer.Argument(help="e.g. models:/winback-policy@challenger")],
    data: Annotated[Path, typer.Argument(help="data directory, frame directory or frame file")],
    out: Annotated[Path, typer.Option(help="JSON file for the metrics")] = Path("evaluation.json"),
    seed: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=SEED_MAX,
            help="seed of the bootstrap intervals (default: the model's training seed); the "
            "held-out contacts are always those the model's training held out",
        ),
    ] = None,
) -> None:
    """Evaluate a registered model on held-out data; print the metrics and write JSON."""
    from models.pyfunc import load_policy_model
    from training.evaluate import (
        Evaluation,
        evaluate_reactivation,
        evaluate_response,
        split_seed,
    )
    from training.inputs import load_training_inputs, protocol_args
    from training.tracking import configure_tracking

    if not out.parent.is_dir():
        fail(f"--out: directory {out.parent} does not exist")
    try:
        configure_tracking()
        model = load_policy_model(model_uri)
        # the model's own cutoff, horizon and population: its test rows are the cutoff's
        inputs = load_training_inputs(data, **protocol_args(model.metadata))  # type: ignore[arg-type]
        ev = Evaluation(notes=dict(inputs.data_notes))
        if inputs.protocol is not None:
            ev.notes["protocol"] = inputs.protocol.describe()
        # the held-out rows follow the model's own seed whatever is given (see split_seed)
        boot_seed = split_seed(model, 0) if seed is None else seed
        if model.reactivation is not None and inputs.reactivation is not None:
            evaluate_reactivation(model, inputs.reactivation, ev, boot_seed)
        if model.response is not None and inputs.offer_response is not None:
            evaluate_response(model, inputs.offer_response, boot_seed, ev, inputs.ground_truth)
    except (TrainingError, FeaturesError, ModelsError) as exc:
        fail(str(exc))
        return
    if not ev.metrics:
        why = ev.notes.get("reactivation_not_evaluated", "its parts and the data's frames differ")
        fail(f"{model_uri}: nothing in {data} that this model can be evaluated on ({why})")
    for key, note in ev.notes.items():
        console.print(f"[bold]{key.replace('_', ' ')}:[/] {note}", highlight=False)
    _print_evaluation(ev)
    out.write_text(json.dumps(ev.to_json(), indent=2, default=str))
    console.print(f"[green]wrote[/] {out}", highlight=False)


@app.command()
def promote(
    data: Annotated[Path, typer.Argument(help="held-out data to compare on")],
    force: Annotated[bool, typer.Option(help="promote even if not better")] = False,
    require_confidence: Annotated[
        bool,
        typer.Option(help="challenger's lower bound must beat the champion's estimate"),
    ] = True,
    seed: Annotated[
        int, typer.Option(min=0, max=SEED_MAX, help="seed of the bootstrap intervals")
    ] = 0,
    model_name: ModelName = None,
) -> None:
    """Compare challenger and champion on the same held-out data; move champion if better.

    Refused (unless --force): a challenger trained on other data, or one that cannot be
    evaluated on DATA.
    """
    import pandas as pd

    from training.promote import promote as run_promote

    try:
        r = run_promote(
            data,
            seed=seed,
            force=force,
            require_confidence=require_confidence,
            model_name=model_name,
        )
    except (TrainingError, FeaturesError, ModelsError) as exc:
        fail(str(exc))
        return
    rows = {
        "criterion": r.criterion,
        "challenger": f"v{r.challenger}",
        "champion": f"v{r.champion}" if r.champion else "(none)",
        "challenger value": r.challenger_value,
        "challenger lower bound": r.challenger_ci_low,
        "champion value": r.champion_value,
        "difference": r.difference,
        "difference 95% CI": f"{_fmt(r.difference_ci[0])} .. {_fmt(r.difference_ci[1])}",
        "decision": "PROMOTED" if r.promoted else "kept champion",
        "reason": r.reason,
    }
    _table("promotion", pd.Series(rows, name="value").rename_axis("").to_frame())
