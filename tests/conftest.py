"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

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


@contextmanager
def postgres_schema(base: str) -> Iterator[str]:
    """A URL of `base` whose search path is a fresh schema, dropped on exit."""
    schema = f"winback_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        u = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield u.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a temporary SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    with postgres_schema(request.getfixturevalue("database_url")) as pg:
        yield pg
