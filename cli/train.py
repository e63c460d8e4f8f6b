"""Commands that train, evaluate and promote `winback-policy`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from cli.output import console, fail
from features.errors import FeaturesError
from models.errors import ModelsError
from training.errors import TrainingError

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


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="data directory, frame directory or frame file")],
    experiment: Annotated[str, typer.Option(help="MLflow experiment")] = "winback",
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="seed of every random choice")] = 0,
    horizon_days: Annotated[
        int | None, typer.Option("--horizon-days", help="reactivation label horizon")
    ] = None,
    bags: Annotated[
        int, typer.Option(min=2, help="bootstrap bags of the response learner (uncertainty)")
    ] = 8,
) -> None:
    """Train what the data supports, log the run to MLflow and register a challenger."""
    from cli.progress import stage_lines
    from training.pipeline import train as run_training

    try:
        with console.status("training") as status, stage_lines(console, "winback.training", status):
            result = run_training(
                data, experiment=experiment, seed=seed, horizon_days=horizon_days, n_bags=bags
            )
    except (TrainingError, FeaturesError, ModelsError) as exc:
        fail(str(exc))
        return
    for part, why in result.skipped.items():
        console.print(f"[yellow]skipped[/] {part}: {why}", highlight=False)
    _print_evaluation(result.evaluation)
    console.print(
        f"[green]registered[/] winback-policy v{result.version} as 'challenger' "
        f"(run {result.run_id}; trained: {', '.join(result.trained)})",
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
    from training.inputs import load_training_inputs
    from training.tracking import configure_tracking

    if not out.parent.is_dir():
        fail(f"--out: directory {out.parent} does not exist")
    try:
        configure_tracking()
        model = load_policy_model(model_uri)
        inputs = load_training_inputs(data)
        ev = Evaluation()
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
        fail(f"{model_uri}: nothing in {data} that this model can be evaluated on")
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
) -> None:
    """Compare challenger and champion on the same held-out data; move champion if better."""
    from training.promote import promote as run_promote

    try:
        r = run_promote(data, seed=seed, force=force, require_confidence=require_confidence)
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
