"""Fixtures shared by the serving tests: an empty database per test, and batch settings."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from serving.settings import ServingSettings
from serving.store import upgrade_database
from tests.api.conftest import POLICY_YAML
from tests.factories import CATALOG_YAML

# The API tests' policy with a 10% holdout and some exploration, so a wave has every action.
POLICY = POLICY_YAML.replace(
    "holdout: {share: 0.0, salt: tests}",
    "holdout: {share: 0.1, salt: tests}\nexploration: {epsilon: 0.3}",
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a temporary SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    base = request.getfixturevalue("database_url")
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


@pytest.fixture
def settings(tmp_path: Path) -> ServingSettings:
    """Batch-scoring settings: `POLICY`, the test catalog and an upgraded SQLite store."""
    (tmp_path / "policy.yaml").write_text(POLICY, encoding="utf-8")
    (tmp_path / "offers.yaml").write_text(CATALOG_YAML, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade_database(url)
    return ServingSettings(
        database_url=url,
        policy_path=tmp_path / "policy.yaml",
        catalog_path=tmp_path / "offers.yaml",
        snapshot_dir=tmp_path / "none",
        model_uri="models:/winback-policy@champion",
    )
