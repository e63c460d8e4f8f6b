"""MLflow tracking: where runs go, and what a run records about its inputs.

The tracking store is SQLite inside `mlruns/` (`sqlite:///mlruns/mlflow.db`) and artifacts live
in `mlruns/artifacts`, so the one folder holds everything. Nothing is configured at import
time: `configure_tracking()` is called by the commands that train, evaluate or promote.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.exceptions import MlflowException

from features.settings import Settings, get_settings
from training.errors import TrackingError

DEFAULT_EXPERIMENT = "winback"


def configure_tracking(settings: Settings | None = None) -> str:
    """Point MLflow at winback's store (creating `mlruns/` if needed); return the URI."""
    settings = settings or get_settings()
    settings.mlruns_dir.mkdir(parents=True, exist_ok=True)
    uri = settings.resolved_tracking_uri()
    mlflow.set_tracking_uri(uri)
    # MLflow logs its own database migrations at INFO on first use; that is noise for users.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return uri


def use_experiment(name: str, settings: Settings | None = None) -> str:
    """Select (creating on first use) an experiment whose artifacts live under mlruns/."""
    settings = settings or get_settings()
    try:
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            location = (settings.mlruns_dir / "artifacts").resolve().as_uri()
            exp_id = mlflow.create_experiment(name, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        mlflow.set_experiment(experiment_id=exp_id)
    except MlflowException as exc:
        raise TrackingError(f"MLflow experiment '{name}': {exc.message}") from None
    return str(exp_id)


def file_digest(paths: Iterable[Path]) -> str:
    """sha256 over the bytes of `paths` (sorted by name), read in chunks."""
    h = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        h.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def source_files(source: Path) -> list[Path]:
    """The files that make up a data directory or frame (what lineage digests cover)."""
    source = Path(source)
    if source.is_file():
        return [source]
    if (source / "partitions.json").is_file():  # a partitioned directory: every part's files
        return sorted(
            [*source.glob("*/part=*/*.parquet"), source / "partitions.json"]
            + [p for p in source.iterdir() if p.suffix in (".parquet", ".yaml") and p.is_file()]
        )
    return sorted(
        p for p in source.iterdir() if p.suffix in (".parquet", ".csv", ".yaml") and p.is_file()
    )


def data_fingerprint(source: Path) -> str:
    """A short digest of what a model was trained on: every table, frame and catalog file of
    `source` (`source_files`). Promotion compares it with the data it evaluates on."""
    return file_digest(source_files(source))[:16]


def log_dataset(df: pd.DataFrame, source: Path, name: str, context: str) -> str:
    """Record a dataset input of the active run, with a digest of its source files."""
    digest = file_digest(source_files(source))[:16]
    dataset = from_pandas(
        df.head(0) if len(df) > 1_000_000 else df,  # schema only for very large frames
        source=str(Path(source).resolve()),
        name=name,
        digest=digest,
    )
    mlflow.log_input(dataset, context=context)
    mlflow.set_tag(f"input.{name}.sha256", digest)
    return digest
