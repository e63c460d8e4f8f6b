"""`winback world play`: decide, record and answer waves on a generated synthetic world."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.output import console, fail

if TYPE_CHECKING:
    from serving.world import WaveTruth

app = typer.Typer(no_args_is_help=True)
group = typer.Typer(no_args_is_help=True, help="Play the service on a synthetic world.")
app.add_typer(group, name="world")


def _money(v: float | None) -> str:
    return "–" if v is None else f"{v:+.3f}"


@group.command("play")
def play(
    data: Annotated[Path, typer.Argument(help="a world written by `winback generate`")],
    out: Annotated[Path, typer.Option("--out", help="directory for truth.json and snapshots")],
    waves: Annotated[int, typer.Option("--waves", min=1, help="waves to play")] = 1,
    days_between: Annotated[
        int, typer.Option("--days-between", min=1, help="days from one wave to the next")
    ] = 35,
    seed: Annotated[int, typer.Option("--seed", help="seed of the outcome draws")] = 0,
    channel: Annotated[str, typer.Option("--channel", help="a channel or auto")] = "auto",
) -> None:
    """Decide for every customer per wave (recorded in WINBACK_DATABASE_URL with the
    WINBACK_* policy, catalog and model; no model: rules only), draw the outcomes from the
    world's true model, post them as events, and write OUT/truth.json."""
    from features.errors import FeaturesError
    from serving.batch.job import load_decider, open_store
    from serving.engine import EngineInputError
    from serving.errors import ServingError
    from serving.model_scorer import mlflow_scorer_loader
    from serving.settings import get_serving_settings
    from serving.world import TRUTH_FILE, play_world

    settings = get_serving_settings()
    table = Table(title=f"played waves on {data}")
    for col in ("wave", "decided", "contacts", "holdouts", "true incr. margin", "true lift"):
        table.add_column(col, justify="left" if col == "wave" else "right")

    def show(w: WaveTruth) -> None:
        console.print(f"[green]played[/] {w.wave_id}: {w.contacts:,} contacts", highlight=False)
        lift = w.incremental_conversion
        table.add_row(
            w.wave_id, f"{w.decided:,}", f"{w.contacts:,}", f"{w.holdouts:,}",
            _money(w.incremental_margin_per_contact),
            "–" if lift is None else f"{lift * 100:+.2f} pp",
        )  # fmt: skip

    try:
        decider, model_error = load_decider(settings, mlflow_scorer_loader())
        if model_error:
            console.print(f"[yellow]model unavailable, rules only:[/] {model_error}")
        store = open_store(settings.database_url, record=True)
        assert store is not None  # record=True always opens one
        try:
            result = play_world(data, out, decider, store, waves, days_between, seed, channel, show)
        finally:
            store.dispose()
    except (ServingError, FeaturesError, EngineInputError, OSError) as exc:
        fail(str(exc))
        return
    console.print(table)
    o = result.overall
    console.print(
        f"[green]wrote[/] {out / TRUTH_FILE}: true incremental margin per contact "
        f"{_money(o['incremental_margin_per_contact'])} over {o['contacts']:,} contacts",
        highlight=False,
    )
