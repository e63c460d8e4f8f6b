"""`winback simulate`: what a candidate policy or model would have earned on the logged data."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.output import console, fail
from features.errors import FeaturesError
from serving.errors import ServingError
from training.errors import TrainingError

if TYPE_CHECKING:
    from models.policy_model import PolicyModel

app = typer.Typer(no_args_is_help=True)


@app.command("simulate")
def simulate_command(
    data: Annotated[
        Path, typer.Option(help="data directory with logged contacts (e.g. from export-log)")
    ],
    policy: Annotated[Path, typer.Option("--policy", help="candidate policy.yaml")],
    model: Annotated[
        str | None,
        typer.Option("--model", help="model URI, e.g. models:/winback-policy@challenger"),
    ] = None,
    campaign: Annotated[str | None, typer.Option(help="only this campaign id")] = None,
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples of the intervals")] = 300,
    seed: Annotated[int, typer.Option(help="seed of the bootstrap")] = 0,
    since: Annotated[
        datetime | None,
        typer.Option(
            help="only rows logged at or after this time (UTC): use the end of the model's "
            "training window, so the model is not judged on rows it learned from"
        ),
    ] = None,
) -> None:
    """Estimate (IPS/SNIPS, DR with a model) a candidate policy against the logged one."""
    import numpy as np

    from cli.simulation import simulate
    from serving.model_scorer import mlflow_scorer_loader
    from serving.policy import load_policy

    try:
        candidate = load_policy(policy)
        loaded: PolicyModel | None = mlflow_scorer_loader()(model).model if model else None
        sim = simulate(data, candidate, loaded, campaign, n_boot, seed, since)
    except (ServingError, TrainingError, FeaturesError) as exc:
        fail(str(exc))
        return
    for warning in sim.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    table = Table(title=f"per logged row ({sim.rows:,} rows; SNIPS, 95% bootstrap intervals)")
    for col in ("metric", "current", "candidate", "difference", "candidate DR"):
        table.add_column(col, justify="right")
    for name, r in sim.table.iterrows():
        dr = (r["candidate_dr"], r["candidate_dr_low"], r["candidate_dr_high"])
        table.add_row(
            str(name),
            f"{r['current']:.4f}",
            f"{r['candidate']:.4f} [{r['candidate_low']:.4f}, {r['candidate_high']:.4f}]",
            f"{r['difference']:+.4f} [{r['diff_low']:+.4f}, {r['diff_high']:+.4f}]",
            "" if np.isnan(dr[0]) else f"{dr[0]:.4f} [{dr[1]:.4f}, {dr[2]:.4f}]",
        )
    console.print(table)
    for label, r in sim.incremental_margin.iterrows():
        console.print(
            f"{label}: incremental margin vs holding out {r['estimate']:+.3f} "
            f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] per row",
            highlight=False,
        )
    console.print(
        f"contacts sent: current {sim.contact_share_current:.1%}, candidate "
        f"{sim.contact_share_candidate:.1%} of logged rows",
        highlight=False,
    )
