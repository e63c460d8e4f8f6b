"""Commands that build training frames and the serving snapshot from a data directory."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.output import console, fail
from features.errors import FeaturesError
from features.featureset import DEFAULT_FEATURE_SET, FeatureSet, get_feature_set

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd
    from rich.progress import Progress

    from features.build import CustomerView
    from features.config import FeatureConfig
    from features.snapshot import Attachment
    from features.spark_features import SparkRun
    from serving.model_scorer import PolicyScorer


class EngineName(StrEnum):
    local = "local"
    spark = "spark"


EngineOption = Annotated[
    EngineName,
    typer.Option(
        "--engine",
        help="local, or spark: one Spark task per customer partition of a partitioned data "
        "directory (master: WINBACK_BATCH_SPARK_MASTER)",
    ),
]

app = typer.Typer(no_args_is_help=True)
group = typer.Typer(no_args_is_help=True, help="Point-in-time features, frames and snapshots.")
app.add_typer(group, name="features")


def _config() -> FeatureConfig:
    from pydantic import ValidationError

    from features.config import FeatureConfig
    from features.offers import format_pydantic_error

    try:
        return FeatureConfig()
    except ValidationError as exc:
        fail(format_pydantic_error("WINBACK_FEATURES_*", exc))
        raise


def _print_summary(title: str, df: pd.DataFrame) -> None:
    import pandas as pd

    table = Table(title=title)
    table.add_column(str(df.index.name or ""))
    for col in df.columns:
        table.add_column(str(col), justify="right")
    for key, row in df.iterrows():
        cells = [f"{v:,.0f}" if float(v).is_integer() else f"{v:,.3f}" for v in row]
        label = f"{key:%Y-%m-%d %H:%M}" if isinstance(key, pd.Timestamp) else str(key)
        table.add_row(label, *cells)
    console.print(table)


@group.command()
def frames(
    directory: Annotated[Path, typer.Argument(help="data directory")],
    out: Annotated[Path, typer.Option("--out", help="folder for the two Parquet frames")],
    cutoffs: Annotated[
        list[str] | None,
        typer.Option(
            "--cutoffs", help="reactivation cutoffs, comma-separated or repeated; default: 4"
        ),
    ] = None,
    horizon_days: Annotated[
        int | None, typer.Option("--horizon-days", help="label horizon H in days (default 90)")
    ] = None,
    engine: EngineOption = EngineName.local,
) -> None:
    """Write OUT/reactivation.parquet and OUT/offer_response.parquet, then summarize them."""
    from features.frames import summarize_offer_response, summarize_reactivation

    cuts = [x.strip() for raw in cutoffs or [] for x in raw.split(",") if x.strip()]
    try:
        if engine is EngineName.spark:
            react, offer = _frames_spark(directory, out, cuts or None, horizon_days)
        else:
            from features.datadir import load_data_dir
            from features.frames import write_frames

            data = load_data_dir(directory)
            with console.status("building frames"):
                built = write_frames(data, out, cuts or None, horizon_days, _config())
            react = built["reactivation.parquet"].data
            offer = built["offer_response.parquet"].data
    except FeaturesError as exc:
        fail(str(exc))
        return
    _print_summary(f"reactivation frame ({len(react):,} rows)", summarize_reactivation(react))
    _print_summary(f"offer-response frame ({len(offer):,} rows)", summarize_offer_response(offer))
    console.print(f"[green]wrote[/] {out}/reactivation.parquet, {out}/offer_response.parquet")


@group.command()
def materialize(
    directory: Annotated[Path, typer.Argument(help="data directory")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="as-of time (default: now, UTC)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="snapshot directory (default: settings)")
    ] = None,
    feature_set: Annotated[
        Path | None, typer.Option("--feature-set", help="a model's feature-set JSON to compute")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="take the feature set from a registered model (models:/...@champion) and "
            "store its scores with the snapshot",
        ),
    ] = None,
    scores: Annotated[
        bool,
        typer.Option(
            "--scores/--no-scores",
            help="with --model: score every customer now, so the API and batch jobs look the "
            "scores up instead of calling the model (used while that model version serves)",
        ),
    ] = True,
    engine: EngineOption = EngineName.local,
) -> None:
    """Write the current features of every customer as a new snapshot version."""
    import numpy as np
    import pandas as pd

    from features.build import build_customer_view
    from features.datadir import load_data_dir
    from features.settings import get_settings
    from features.snapshot import write_snapshot

    root = out or get_settings().snapshot_dir
    if feature_set is not None and model is not None:
        fail("--feature-set and --model: give one (--model takes the model's feature set)")
        return
    try:
        fs = None
        scorer = None
        if feature_set is not None:
            try:
                fs = FeatureSet.from_json(feature_set.read_text(encoding="utf-8"))
            except FeaturesError as exc:
                raise FeaturesError(f"{feature_set}: {exc}") from None
        if model is not None:
            scorer = _model_scorer(model)
            fs = FeatureSet.from_json(scorer.model.feature_set)
        when = as_of or pd.Timestamp.now(tz="UTC").tz_localize(None)
        config = _config()
        attachments: dict[str, Attachment] = {}

        def attach(view: CustomerView) -> dict[str, Attachment]:
            if scorer is not None and scores:
                from serving.precomputed import SCORES, scores_attachment

                with console.status(
                    f"scoring {len(view.features):,} customers with {scorer.version}"
                ):
                    matrix = view.features.to_numpy(np.float64)
                    attachments[SCORES] = scores_attachment(scorer, matrix)
            return attachments

        if engine is EngineName.spark:
            version, n_rows, as_of_ts, fs_key = _materialize_spark(
                directory, when, root, config, fs, attach
            )
        else:
            data = load_data_dir(directory)
            with console.status("computing features"):
                view = build_customer_view(data, when, config, fs)
            attach(view)
            with console.status("writing the snapshot"):
                version = write_snapshot(view, root, config, attachments=attachments)
            n_rows, as_of_ts, fs_key = len(view.features), view.as_of, view.feature_set.key
    except OSError as exc:
        fail(f"{exc.filename or root}: {exc.strerror}")
        return
    except FeaturesError as exc:
        fail(str(exc))
        return
    stored = f", scores of {scorer.version}" if attachments and scorer is not None else ""
    console.print(
        f"[green]snapshot[/] {root} version {version}: {n_rows:,} customers, "
        f"{fs_key}, as of {as_of_ts}{stored}",
        highlight=False,
    )


def _materialize_spark(
    directory: Path,
    when: pd.Timestamp | str,
    root: Path,
    config: FeatureConfig,
    fs: FeatureSet | None,
    attach: Callable[[CustomerView], dict[str, Attachment]],
) -> tuple[str, int, pd.Timestamp, str]:
    from features.build import to_timestamp
    from features.snapshot import partitioned_copy
    from features.spark_features import materialize_spark, spark_session
    from serving.batch.settings import BatchSettings

    spark = spark_session(BatchSettings().spark_master)
    try:
        progress, update = _spark_progress("computing features on Spark")
        with progress:
            run = materialize_spark(
                spark, directory, when, root, config, fs, on_progress=update, attach=attach
            )
    finally:
        spark.stop()
    _spark_done(run, "features")
    copy = partitioned_copy(root, run.out)
    key = copy.feature_set.key if copy is not None else ""
    return run.out, run.rows, to_timestamp(when), key


def _spark_progress(what: str) -> tuple[Progress, Callable[[int, int], None]]:
    from cli.progress import partitions_progress

    progress = partitions_progress(console)
    task = progress.add_task(what, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return progress, update


def _spark_done(run: SparkRun, what: str) -> None:
    rate = run.rows / run.seconds if run.seconds > 0 else 0.0
    slowest = max(run.task_seconds.values(), default=0.0)
    console.print(
        f"[green]spark[/] {what}: {run.rows:,} rows from {run.n_partitions} partitions in "
        f"{run.seconds:,.1f} s ({rate:,.0f} rows/s; slowest partition {slowest:,.1f} s)",
        highlight=False,
    )


def _frames_spark(
    directory: Path, out: Path, cuts: list[str] | None, horizon_days: int | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    from features.frames import OFFER_RESPONSE_FILE, REACTIVATION_FILE
    from features.spark_features import frames_spark, spark_session
    from serving.batch.settings import BatchSettings

    spark = spark_session(BatchSettings().spark_master)
    try:
        progress, update = _spark_progress("building frames on Spark")
        with progress:
            run, built = frames_spark(
                spark, directory, out, cuts, horizon_days, _config(), on_progress=update
            )
    finally:
        spark.stop()
    _spark_done(run, "frames")
    return built[REACTIVATION_FILE][0], built[OFFER_RESPONSE_FILE][0]


def _model_scorer(model_uri: str) -> PolicyScorer:
    """The registered model as the API loads it (its feature set keeps category codes equal)."""
    from serving.errors import ModelUnavailableError
    from serving.model_scorer import mlflow_scorer_loader
    from serving.settings import ServingSettings

    try:
        # the plain LightGBM backend: the stored scores are the reference computation
        return mlflow_scorer_loader(serving=ServingSettings(model_backend="lightgbm"))(model_uri)
    except ModelUnavailableError as exc:
        raise FeaturesError(str(exc)) from None


@group.command("list")
def list_features(
    name: Annotated[
        str, typer.Option("--feature-set", help="feature set name")
    ] = DEFAULT_FEATURE_SET.name,
    as_json: Annotated[bool, typer.Option("--json", help="print the feature set as JSON")] = False,
) -> None:
    """Show a feature set's columns in order: name, dtype, lookback, meaning, vocabulary."""
    try:
        fs = get_feature_set(name)
    except FeaturesError as exc:
        fail(str(exc))
        return
    if as_json:
        console.print_json(fs.to_json())
        return
    table = Table(title=f"{fs.key}: {len(fs.columns)} features")
    for col in ("#", "name", "dtype", "lookback", "meaning", "vocabulary"):
        table.add_column(col, overflow="fold")
    for i, f in enumerate(fs.features):
        table.add_row(str(i), f.name, f.dtype, f.lookback, f.meaning, ", ".join(f.vocabulary))
    console.print(table)
