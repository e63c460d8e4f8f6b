"""Fixtures shared by the serving tests: batch settings (the empty store per test, `url`, is in
tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.settings import ServingSettings
from serving.store import upgrade_database
from tests.api.conftest import POLICY_YAML
from tests.factories import CATALOG_YAML

# The API tests' policy with a 10% holdout and some exploration, so a wave has every action.
POLICY = POLICY_YAML.replace(
    "holdout: {share: 0.0, salt: tests}",
    "holdout: {share: 0.1, salt: tests}\nexploration: {epsilon: 0.3}",
)


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
