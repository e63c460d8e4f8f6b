"""An app on a temporary SQLite store, a tiny in-memory snapshot and a pinned clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from features.constants import CHANNELS, LAPSE_STATES, VALUE_TIERS
from features.featureset import CONSENT_STATES, WINBACK_V1, FeatureSet
from features.snapshot import Snapshot
from serving.api import create_app
from serving.api.runtime import Runtime
from serving.errors import ModelUnavailableError
from serving.scoring import Scorer
from serving.settings import DEFAULT_MODEL_URI, ServingSettings
from tests.factories import CATALOG_YAML, snapshot_of

CLIENT = {"X-API-Key": "client-key"}
ADMIN = {"X-API-Key": "admin-key"}
T0 = datetime(2026, 1, 10, 12, 0, 0)

POLICY_YAML = """
journey:
  stages:
    - {name: reconnect, offer_types: [content, none, percent_discount, free_shipping], min_days_since_previous: 0}
    - {name: nudge, offer_types: [content, none, percent_discount, free_shipping], min_days_since_previous: 0}
    - {name: offer, offer_types: [content, none, percent_discount, free_shipping], min_days_since_previous: 0}
  sunset_days: 0
frequency:
  across_channels: [{max_contacts: 1, days: 7}]
holdout: {share: 0.0, salt: tests}
eligibility:
  lapse_states: [active, at_risk, lapsed, churned]
  channels: [email, sms, push]
channel_preference: [email, sms, push]
"""  # noqa: E501


def feature_set() -> FeatureSet:
    return WINBACK_V1.with_vocabulary("favourite_category", ("books", "garden"))


def customer_row(fs: FeatureSet, consent: dict[str, str]) -> np.ndarray:
    """A lapsed mid-tier customer who likes books; consent per channel (else unknown)."""
    col = {name: i for i, name in enumerate(fs.columns)}
    row = np.full(len(fs.columns), np.nan)
    values = {
        "lapse_state": LAPSE_STATES.index("lapsed"),
        "value_tier": VALUE_TIERS.index("mid"),
        "favourite_category": 0,
        "journey_stage": 0,
        "days_since_last_order": 200,
        "aov_lifetime": 60.0,
        "margin_rate_lifetime": 0.4,
        "contacts_7d": 0,
        "contacts_30d": 0,
        "contacts_90d": 0,
    }
    for ch in CHANNELS:
        values[f"consent_{ch}"] = CONSENT_STATES.index(consent.get(ch, "unknown"))
    for name, v in values.items():
        row[col[name]] = v
    return row


@dataclass
class FakeSnapshots:
    """A snapshot handle over an in-memory `Snapshot` (or none, to test the missing case)."""

    snapshot: Snapshot | None

    def current(self) -> Snapshot:
        if self.snapshot is None:
            from features.snapshot import SnapshotError

            raise SnapshotError("tests: no snapshot")
        return self.snapshot

    def refresh(self) -> bool:
        return False


def make_snapshot(customers: dict[str, dict[str, str]]) -> Snapshot:
    fs = feature_set()
    ids = list(customers)
    return snapshot_of(np.vstack([customer_row(fs, customers[c]) for c in ids]), ids, fs)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@dataclass
class FakeScorer:
    """Values per option id (the same for every customer)."""

    values: dict[str, float]
    version: str = "fake-model/1"
    feature_set_key: str = field(default_factory=lambda: feature_set().key)
    broken: bool = False

    @property
    def option_ids(self) -> Sequence[str]:
        return list(self.values)

    def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.broken:
            raise RuntimeError("booster file truncated")
        v = np.tile(np.array(list(self.values.values())), (features.shape[0], 1))
        return np.full_like(v, 0.1), v


def loader_of(models: Mapping[str, Scorer]) -> Callable[[str], Scorer]:
    def load(uri: str) -> Scorer:
        if uri not in models:
            raise ModelUnavailableError(f"model_uri: nothing registered at {uri}")
        return models[uri]

    return load


def write_files(tmp_path: Path) -> dict[str, Path]:
    """The test policy and catalog in `tmp_path`, and where the SQLite store goes."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_YAML, encoding="utf-8")
    catalog = tmp_path / "offers.yaml"
    catalog.write_text(CATALOG_YAML, encoding="utf-8")
    return {"policy": policy, "catalog": catalog, "db": tmp_path / "store.db"}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return write_files(tmp_path)


CHAMPION = DEFAULT_MODEL_URI
"""The model URI the tests' settings serve (the registry's champion alias)."""


def settings_for(files: dict[str, Path], **overrides: Any) -> ServingSettings:
    """The tests' settings for the files of `write_files` (`overrides` win)."""
    fields: dict[str, Any] = {
        "database_url": f"sqlite:///{files['db']}",
        "policy_path": files["policy"],
        "catalog_path": files["catalog"],
        "snapshot_dir": files["db"].parent / "no-snapshot",
        "model_uri": CHAMPION,
        "api_keys": ["client-key"],
        "admin_keys": ["admin-key"],
        "reload_state_path": files["db"].parent / "reload.json",
        "refresh_interval_seconds": 0,  # tests call `apply_pending` themselves
    }
    return ServingSettings(**(fields | overrides))


@pytest.fixture
def settings(files: dict[str, Path]) -> ServingSettings:
    return settings_for(files, next_offer_window_seconds=600)


CUSTOMERS = {
    "c1": {"email": "opted_in"},
    "c2": {"email": "opted_in", "sms": "opted_in"},
    "c3": {"email": "opted_in"},
    "c-noconsent": {},
}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(settings: ServingSettings, clock: Clock) -> Iterator[TestClient]:
    """Rules only (no model registered), snapshot with CUSTOMERS."""
    app = create_app(settings, snapshots=FakeSnapshots(make_snapshot(CUSTOMERS)), clock=clock)
    with TestClient(app) as c:
        yield c


def metric_value(text: str, series: str) -> float:
    """The value of one line of a Prometheus exposition, by its exact name and labels."""
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    raise AssertionError(f"{series} not in /metrics:\n{text}")


def runtime_of(client: TestClient) -> Runtime:
    """The runtime the app under test loaded."""
    app = cast(FastAPI, client.app)
    return cast(Runtime, app.state.runtime)


@pytest.fixture
def store_client(settings: ServingSettings, clock: Clock, url: str) -> Iterator[TestClient]:
    """`client` on each store: SQLite, and PostgreSQL when WINBACK_TEST_DATABASE_URL is set."""
    cfg = settings.model_copy(update={"database_url": url})
    app = create_app(cfg, snapshots=FakeSnapshots(make_snapshot(CUSTOMERS)), clock=clock)
    with TestClient(app) as c:
        yield c
