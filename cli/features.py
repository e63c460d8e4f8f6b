"""Commands that build training frames and the serving snapshot from a data directory."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.output import console, fail
from cli.progress import JobsOption
from features.errors import FeaturesError
from features.featureset import DEFAULT_FEATURE_SET, FeatureSet, get_feature_set

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np
    import pandas as pd
    from pyspark.sql import SparkSession

    from features.build import CustomerView
    from features.config import FeatureConfig
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
        "directory, the same files as local (master: WINBACK_SPARK_MASTER)",
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
    jobs: JobsOption = 1,
) -> None:
    """Write OUT/reactivation.parquet and OUT/offer_response.parquet, then summarize them."""
    from features.datadir import load_data_dir
    from features.frames import summarize_offer_response, summarize_reactivation, write_frames
    from features.partition_layout import is_partitioned

    cuts = [x.strip() for raw in cutoffs or [] for x in raw.split(",") if x.strip()]
    _spark_needs_partitions(directory, engine)
    try:
        if is_partitioned(directory) or engine is EngineName.spark:
            react_df, offer_df = _frames_partitioned(
                directory, out, cuts, horizon_days, engine, jobs
            )
        else:
            data = load_data_dir(directory)
            with console.status("building frames"):
                built = write_frames(data, out, cuts or None, horizon_days, _config())
            react_df = built["reactivation.parquet"].data
            offer_df = built["offer_response.parquet"].data
    except FeaturesError as exc:
        fail(str(exc))
        return
    _print_summary(f"reactivation frame ({len(react_df):,} rows)", summarize_reactivation(react_df))
    _print_summary(
        f"offer-response frame ({len(offer_df):,} rows)", summarize_offer_response(offer_df)
    )
    console.print(f"[green]wrote[/] {out}/reactivation.parquet, {out}/offer_response.parquet")


def _frames_partitioned(
    directory: Path,
    out: Path,
    cuts: list[str],
    horizon_days: int | None,
    engine: EngineName = EngineName.local,
    jobs: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write both frames partition by partition (`jobs` worker processes with the local
    engine); return the columns the summaries need."""
    import pyarrow.parquet as pq

    from cli.progress import partition_bar
    from features import constants as c
    from features import modeling_frame as mf
    from features.partition_layout import read_layout
    from features.streaming import write_frames_partitioned

    if engine is EngineName.spark:
        from features.spark_features import frames_spark

        with _spark() as (spark, on_progress):
            run, _ = frames_spark(
                spark, directory, out, cuts or None, horizon_days, _config(), on_progress
            )
        _spark_done(run, "frames")
    else:
        layout = read_layout(directory)
        total = layout.row_counts.get("customers")
        with partition_bar(console, "building frames", total, layout.n_partitions) as on_part:
            write_frames_partitioned(
                directory, out, cuts or None, horizon_days, _config(), on_part, jobs
            )
    react_cols = [mf.CUTOFF, mf.LABEL, mf.CONTACTED_IN_WINDOW, mf.OUTCOME_MARGIN]
    offer_cols = [c.OFFER_ID, mf.CONVERTED, mf.OUTCOME_REVENUE, mf.OUTCOME_MARGIN]
    offer_cols.append(mf.UNSUBSCRIBED)
    react = pq.read_table(Path(out) / "reactivation.parquet", columns=react_cols).to_pandas()
    offer = pq.read_table(Path(out) / "offer_response.parquet", columns=offer_cols).to_pandas()
    return react, offer


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
    jobs: JobsOption = 1,
) -> None:
    """Write the current features of every customer as a new snapshot version."""
    import numpy as np
    import pandas as pd

    from features.build import build_customer_view
    from features.datadir import load_data_dir
    from features.partition_layout import is_partitioned
    from features.settings import get_settings
    from features.snapshot import Attachment, write_snapshot

    root = out or get_settings().snapshot_dir
    _spark_needs_partitions(directory, engine)
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
        if is_partitioned(directory) or engine is EngineName.spark:
            _materialize_partitioned(
                directory, when, root, config, fs, scorer if scores else None, engine, jobs
            )
            return
        data = load_data_dir(directory)
        with console.status("computing features"):
            view = build_customer_view(data, when, config, fs)
        attachments: dict[str, Attachment] = {}
        if scorer is not None and scores:
            from serving.precomputed import SCORES, scores_attachment

            with console.status(f"scoring {len(view.features):,} customers with {scorer.version}"):
                matrix = view.features.to_numpy(np.float64)
                attachments[SCORES] = scores_attachment(scorer, matrix)
        with console.status("writing the snapshot"):
            version = write_snapshot(view, root, config, attachments=attachments)
    except OSError as exc:
        fail(f"{exc.filename or root}: {exc.strerror}")
        return
    except FeaturesError as exc:
        fail(str(exc))
        return
    stored = f", scores of {scorer.version}" if attachments and scorer is not None else ""
    console.print(
        f"[green]snapshot[/] {root} version {version}: {len(view.features):,} customers, "
        f"{view.feature_set.key}, as of {view.as_of}{stored}",
        highlight=False,
    )


def _materialize_partitioned(
    directory: Path,
    when: pd.Timestamp | str,
    root: Path,
    config: FeatureConfig,
    fs: FeatureSet | None,
    scorer: PolicyScorer | None,
    engine: EngineName = EngineName.local,
    jobs: int = 1,
) -> None:
    """`materialize` of a partitioned directory: one partition at a time into the snapshot
    (on Spark: one task per partition, then the same writer)."""
    import numpy as np

    from cli.progress import partition_bar
    from features.partition_layout import read_layout
    from features.streaming import materialize_partitioned

    attach: Callable[[CustomerView], dict[str, dict[str, np.ndarray]]] | None = None
    meta = None
    if scorer is not None:
        from serving.precomputed import SCORES, scores_attachment, scores_meta

        def _scores(view: CustomerView) -> dict[str, dict[str, np.ndarray]]:
            matrix = view.features.to_numpy(np.float64)
            return {SCORES: dict(scores_attachment(scorer, matrix).arrays)}

        attach = _scores

        meta = {SCORES: scores_meta(scorer)}
    stored = f", scores of {scorer.version}" if scorer is not None else ""
    if engine is EngineName.spark:
        from features.snapshot import partitioned_copy
        from features.spark_features import materialize_spark

        with _spark() as (spark, on_progress):
            run = materialize_spark(
                spark, directory, when, root, config, fs, attach, meta, on_progress
            )
        _spark_done(run, "features")
        copy = partitioned_copy(root, run.out)
        assert copy is not None
        console.print(
            f"[green]snapshot[/] {root} version {run.out}: {run.rows:,} customers, "
            f"{copy.feature_set.key}, as of {copy.as_of}{stored} ({run.n_partitions} "
            f"partitions; partitioned copy {copy.path})",
            highlight=False,
        )
        return
    layout = read_layout(directory)
    total = layout.row_counts.get("customers")
    with partition_bar(console, "materializing", total, layout.n_partitions) as on_part:
        result = materialize_partitioned(
            directory, when, root, config, fs, attach, meta, on_part, jobs
        )
    console.print(
        f"[green]snapshot[/] {root} version {result.version}: {result.n_customers:,} customers, "
        f"{result.feature_set.key}, as of {result.as_of}{stored} "
        f"({layout.n_partitions} partitions)",
        highlight=False,
    )


def _spark_needs_partitions(directory: Path, engine: EngineName) -> None:
    """Refuse `--engine spark` on an unpartitioned directory before a session starts."""
    from features.partition_layout import is_partitioned

    if engine is EngineName.spark and not is_partitioned(directory):
        fail(
            f"--engine spark: {directory} is not a partitioned data directory (no "
            "partitions.json); split it first with `winback partition`, or use --engine local"
        )


@contextmanager
def _spark() -> Iterator[tuple[SparkSession, Callable[[int, int], None]]]:
    """A Spark session on WINBACK_SPARK_MASTER and a bar of partitions done."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from features.spark_features import spark_session
    from serving.batch.settings import BatchSettings

    master = BatchSettings().spark_master
    with console.status(f"starting Spark ({master})"):
        spark = spark_session(master)
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("partitions"),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task(f"Spark {master}", total=None)

    def on_progress(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    try:
        with progress:
            yield spark, on_progress
    finally:
        spark.stop()


def _spark_done(run: SparkRun, what: str) -> None:
    rate = run.rows / run.seconds if run.seconds > 0 else 0.0
    slowest = max(run.task_seconds.values(), default=0.0)
    console.print(
        f"[green]spark[/] {what}: {run.rows:,} rows from {run.n_partitions} partitions in "
        f"{run.seconds:,.1f} s ({rate:,.0f} rows/s; slowest partition {slowest:,.1f} s)",
        highlight=False,
    )


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
