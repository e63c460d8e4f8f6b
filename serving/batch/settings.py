"""Settings of batch scoring, read from `WINBACK_*` environment variables (never at import)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BatchSettings(BaseSettings):
    """How `winback score` runs."""

    model_config = SettingsConfigDict(env_prefix="WINBACK_", extra="ignore")

    spark_master: str = "local[*]"
    """Spark master URL for `--engine spark` (`local[*]`, `spark://host:7077`, `yarn`, ...)."""

    batch_chunk_rows: int = Field(100_000, ge=1)
    """Customers decided per chunk by the local engine (bounds its memory)."""
