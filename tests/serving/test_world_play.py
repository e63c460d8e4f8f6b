"""`winback world play`: the service decides, the world answers from its true model.

A small generated world is played for two waves with the example policy (holdout share 0.3)
in rules-only mode; the store then holds what the API path records, and `truth.json` the
TRUE expected effect of the contacts made. The report's interval is checked against that
truth on a larger seeded world (slow).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from cli.main import app
from features.errors import FeaturesError
from features.synthetic.generate import WORLD_FILE, generate_world, write_world
from serving.batch.job import load_decider
from serving.reporting import report_summary
from serving.reporting.report import FAIR_COMPARISON
from serving.scoring import no_model_loader
from serving.settings import ServingSettings
from serving.store import Store, upgrade_database
from serving.store.models import Contact, Decision, Event
from serving.world import TRUTH_FILE, PlayResult, play_world

POLICY = Path(__file__).resolve().parents[2] / "policy.example.yaml"


def _policy(folder: Path, share: float) -> Path:
    text = re.sub(r"(holdout:\s*\n\s*share:\s*)[0-9.]+", rf"\g<1>{share}",
                  POLICY.read_text(encoding="utf-8"))  # fmt: skip
    path = folder / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _setup(folder: Path, customers: int, world_seed: int) -> tuple[Path, Store, ServingSettings]:
    data = write_world(generate_world(customers, world_seed), folder / "world")
    url = f"sqlite:///{folder / 'store.db'}"
    upgrade_database(url)
    settings = ServingSettings(database_url=url, policy_path=_policy(folder, 0.3),
                               catalog_path=data / "offers.yaml", model_uri="")  # fmt: skip
    return data, Store.from_url(url), settings


def _play(folder: Path, customers: int, world_seed: int, waves: int, seed: int) -> tuple[
    Store, PlayResult
]:  # fmt: skip
    data, store, settings = _setup(folder, customers, world_seed)
    decider, _ = load_decider(settings, no_model_loader)
    return store, play_world(data, folder / "out", decider, store, waves, 35, seed)


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Store, PlayResult]]:
    folder = tmp_path_factory.mktemp("play")
    store, result = _play(folder, 1500, 5, waves=2, seed=1)
    yield folder, store, result
    store.dispose()


def test_truth_json_has_the_reports_keys_per_wave_and_overall(
    played: tuple[Path, Store, PlayResult],
) -> None:
    folder, store, _ = played
    truth = json.loads((folder / "out" / TRUTH_FILE).read_text())
    assert set(truth) == {"overall", "waves"} and len(truth["waves"]) == 2
    overall = truth["overall"]
    for key in ("incremental_margin_per_contact", "incremental_conversion"):
        assert isinstance(overall[key], float)
        per_wave = [(w[key], w["contacts"]) for w in truth["waves"]]
        weighted = sum(v * n for v, n in per_wave) / sum(n for _, n in per_wave)
        assert overall[key] == pytest.approx(weighted)  # per contact over all waves
    with Session(store.engine) as s:
        n_contacts = len(s.scalars(select(Contact.contact_id)).all())
    assert overall["contacts"] == n_contacts > 100


def test_holdouts_record_the_contact_they_replaced_and_send_nothing(
    played: tuple[Path, Store, PlayResult],
) -> None:
    _, store, _ = played
    with Session(store.engine) as s:
        held = s.scalars(select(Decision).where(Decision.action == "holdout")).all()
        contact_ids = set(s.scalars(select(Contact.decision_id)).all())
        actions = set(s.scalars(select(Decision.action)).all())
    assert len(held) > 30 and {"message", "holdout", "none"} <= actions
    for d in held:
        assert d.offer_id is not None and d.channel is not None and d.stage is not None
        assert d.propensity == pytest.approx(0.3) and 0 < (d.replaced_propensity or 0) <= 1
        assert d.decision_id not in contact_ids  # no contact: nothing counts against a cap


def test_outcomes_go_through_the_event_path(played: tuple[Path, Store, PlayResult]) -> None:
    _, store, result = played
    with Session(store.engine) as s:
        events = s.execute(select(Event.type, Event.decision_id, Event.margin)).all()
    types = {t for t, _, _ in events}
    assert {"order", "open"} <= types and "delivered" not in types
    orders = [e for e in events if e[0] == "order"]
    assert sum(1 for e in orders if e[1] is not None) > 10  # contacts' orders name them
    assert sum(w.posted["order"] + w.posted["ongoing order"] for w in result.waves) == len(orders)


def test_report_on_a_played_world_compares_like_with_like(
    played: tuple[Path, Store, PlayResult],
) -> None:
    _, store, result = played
    r = report_summary(store)
    assert r["comparison"] == FAIR_COMPARISON
    head = r["incremental_margin_per_contact"]
    assert head["n_contacted"] == result.overall["contacts"]
    assert head["n_control"] == sum(w.holdouts for w in result.waves)
    assert r["overall"]["delivered"] is None and r["overall"]["open_rate"] is not None


def test_same_seeds_same_play(tmp_path: Path) -> None:
    a_store, a = _play(tmp_path / "a", 300, 2, waves=1, seed=9)
    b_store, b = _play(tmp_path / "b", 300, 2, waves=1, seed=9)
    a_store.dispose()
    b_store.dispose()
    assert a.as_dict()["overall"] == b.as_dict()["overall"]
    assert (tmp_path / "a/out/truth.json").read_text() == (
        tmp_path / "b/out/truth.json"
    ).read_text()


def test_cli_plays_and_refuses_a_directory_that_is_not_a_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, store, settings = _setup(tmp_path, 300, 4)
    store.dispose()
    monkeypatch.setenv("WINBACK_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("WINBACK_POLICY_PATH", str(settings.policy_path))
    monkeypatch.setenv("WINBACK_CATALOG_PATH", str(settings.catalog_path))
    monkeypatch.setenv("WINBACK_MODEL_URI", "")
    from serving.settings import get_serving_settings

    get_serving_settings.cache_clear()
    out = tmp_path / "out"
    args = ["world", "play", str(data), "--waves", "1", "--seed", "3", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "true incremental margin per contact" in res.output
    assert (out / TRUTH_FILE).is_file()
    (data / WORLD_FILE).unlink()
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code != 0 and "world.json" in bad.output and "Traceback" not in bad.output
    get_serving_settings.cache_clear()


def test_play_rejects_bad_counts(tmp_path: Path) -> None:
    with pytest.raises(FeaturesError, match="at least 1"):
        play_world(tmp_path, tmp_path, None, None, 0, 35, 1)  # type: ignore[arg-type]


@pytest.mark.slow
def test_report_interval_covers_the_true_incremental_margin(tmp_path: Path) -> None:
    """8,000 customers, two waves: the report's 95% interval of incremental margin per contact
    covers truth.json's value (seeded; the bench checks coverage over 20 campaigns)."""
    store, result = _play(tmp_path, 8000, 21, waves=2, seed=4)
    try:
        head = report_summary(store)["incremental_margin_per_contact"]
    finally:
        store.dispose()
    truth = result.overall["incremental_margin_per_contact"]
    assert head["ci_low"] <= truth <= head["ci_high"], (head, truth)
    assert np.isfinite(head["estimate"]) and head["n_control"] > 300
