"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from features.settings import get_settings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _clean_winback_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts without WINBACK_* variables and with fresh settings."""
    for key in list(os.environ):
        if key.startswith("WINBACK_") and key != "WINBACK_TEST_DATABASE_URL":
            monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def shared_data() -> Path:
    """The real datasets beside the repository (skips when they are absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def database_url() -> str:
    """PostgreSQL URL for tests that need the production store (skipped when not set)."""
    url = os.environ.get("WINBACK_TEST_DATABASE_URL", "")
    if not url:
        pytest.skip("WINBACK_TEST_DATABASE_URL is not set: PostgreSQL tests skipped")
    return url
