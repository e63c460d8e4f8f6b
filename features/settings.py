"""Settings shared by every package, read from `WINBACK_*` environment variables.

Nothing is read at import time: call `get_settings()`; tests clear the cache between cases.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where winback keeps its data and models."""

    model_config = SettingsConfigDict(env_prefix="WINBACK_", extra="ignore")

    data_dir: Path = Path("data/demo")
    """Default data directory (the demo world the README's first command generates)."""

    mlruns_dir: Path = Path("mlruns")
    """MLflow's local store: the SQLite tracking database and the artifacts."""

    tracking_uri: str = ""
    """MLflow tracking URI; empty means `sqlite:///<mlruns_dir>/mlflow.db`."""

    snapshot_dir: Path = Path("data/snapshot")
    """Where `winback features materialize` writes serving snapshots (versions + CURRENT)."""

    assumed_margin_rate: float = Field(0.25, ge=0.0, le=1.0)
    """Share of revenue taken as margin for orders without one, unless the data directory's
    `dataset.json` states its own (`winback import transactions --margin-rate`)."""

    model_name: str = "winback-policy"
    """Registered model name `train` registers to and `promote` moves aliases on; one per data
    set (e.g. `winback-cdnow`), so that one data set's challenger never replaces another's."""

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.mlruns_dir.as_posix()}/mlflow.db"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; `get_settings.cache_clear()` re-reads them)."""
    return Settings()
