"""`/metrics` with several workers: prometheus_client's multiprocess mode.

Two app instances in separate processes stand for two uvicorn workers sharing one
`PROMETHEUS_MULTIPROC_DIR`. prometheus_client picks its value class when it is imported, so
each "worker" is a fresh interpreter started with the variable already set, driven line by
line over stdin/stdout (`_worker` below).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import values

from cli.serve import METRICS_DIR_ENV, metrics_dir
from serving.api import create_app
from serving.api.metrics import Metrics, forget_dead_workers
from serving.settings import ServingSettings
from tests.api.conftest import (
    CLIENT,
    CUSTOMERS,
    POLICY_YAML,
    Clock,
    FakeScorer,
    FakeSnapshots,
    loader_of,
    make_snapshot,
    metric_value,
)
from tests.factories import CATALOG_YAML

REPO = Path(__file__).resolve().parents[2]
MODEL = "models:/winback-policy@champion"
END = "--end--"


def _worker(workdir: str, scored: str) -> None:
    """One "worker": an app on its own SQLite store, commanded over stdin.

    Commands: `decide CUSTOMER` prints the decision as one JSON line, `scrape` prints the
    `/metrics` text then `END`, `quit` leaves (the TestClient runs the app's shutdown).
    """
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "policy.yaml").write_text(POLICY_YAML, encoding="utf-8")
    (root / "offers.yaml").write_text(CATALOG_YAML, encoding="utf-8")
    settings = ServingSettings(
        database_url=f"sqlite:///{root / 'store.db'}",
        policy_path=root / "policy.yaml",
        catalog_path=root / "offers.yaml",
        snapshot_dir=root / "no-snapshot",
        model_uri=MODEL,
        api_keys=["client-key"],
        reload_state_path=root / "reload.json",
        refresh_interval_seconds=0,
    )
    models = {MODEL: FakeScorer({"pct10": 4.0, "freeship": 1.0, "guide": 2.0, "none": 0.5})}
    app = create_app(
        settings,
        scorer_loader=loader_of(models) if scored == "scored" else None,
        snapshots=FakeSnapshots(make_snapshot(CUSTOMERS)),
        clock=Clock(),
    )
    with TestClient(app) as client:
        print("ready", flush=True)
        for line in sys.stdin:
            command, _, arg = line.strip().partition(" ")
            if command == "decide":
                body = {"customer_id": arg, "channel": "auto", "dry_run": True}
                r = client.post("/v1/recommendations", json=body, headers=CLIENT)
                print(json.dumps(r.json()), flush=True)
            elif command == "scrape":
                print(client.get("/metrics").text, END, sep="\n", flush=True)
            else:
                break


class Worker:
    """The parent's handle on one `_worker` process."""

    def __init__(self, workdir: Path, scored: bool, metrics_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WINBACK_")}
        env[METRICS_DIR_ENV] = str(metrics_path)
        code = "import sys; from tests.api.test_metrics_multiprocess import _worker; _worker(*sys.argv[1:])"  # noqa: E501
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(workdir), "scored" if scored else "rules"],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"worker {self.proc.pid} exited with {self.proc.poll()}"
        return line.rstrip("\n")

    def _send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def ready(self) -> None:
        assert self._line() == "ready"

    def decide(self, customer_id: str) -> str:
        """The decision's `winback_decisions_total` labels."""
        self._send(f"decide {customer_id}")
        d = json.loads(self._line())
        reason = d["reasons"][0] if d["reasons"] else "-"
        return f'action="{d["action"]}",offer="{d["offer_id"] or "-"}",reason="{reason}"'

    def scrape(self) -> str:
        self._send("scrape")
        lines = []
        while (line := self._line()) != END:
            lines.append(line)
        return "\n".join(lines)

    def quit(self) -> None:
        self._send("quit")
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[Worker, Worker]]:
    shared = tmp_path / "metrics"
    shared.mkdir()
    rules = Worker(tmp_path / "rules", scored=False, metrics_path=shared)
    scored = Worker(tmp_path / "scored", scored=True, metrics_path=shared)
    try:
        rules.ready()
        scored.ready()
        yield rules, scored
    finally:
        rules.kill()
        scored.kill()


RECOMMEND_COUNT = (
    'winback_http_request_duration_seconds_count{method="POST",'
    'route="/v1/recommendations",status="200"}'
)


@pytest.mark.slow
def test_metrics_sum_over_workers_and_degraded_is_the_max_of_live_ones(
    workers: tuple[Worker, Worker],
) -> None:
    rules, scored = workers
    rules_label = rules.decide("c1")
    assert rules.decide("c1") == rules_label  # dry runs: the same decision twice
    unknown = rules.decide("nobody")
    assert scored.decide("nobody") == unknown
    scored_label = scored.decide("c1")  # a scored decision last: this worker is not degraded
    assert scored_label != rules_label

    for text in (scored.scrape(), rules.scrape()):  # any worker answers with the totals
        assert metric_value(text, f"winback_decisions_total{{{rules_label}}}") == 2
        assert metric_value(text, f"winback_decisions_total{{{unknown}}}") == 2
        assert metric_value(text, f"winback_decisions_total{{{scored_label}}}") == 1
        assert metric_value(text, RECOMMEND_COUNT) == 5
        assert metric_value(text, "winback_degraded") == 1  # the rules-only worker is live

    rules.quit()
    text = scored.scrape()
    assert metric_value(text, "winback_degraded") == 0  # only the live worker's gauge counts
    assert metric_value(text, f"winback_decisions_total{{{rules_label}}}") == 2  # counts stay
    assert metric_value(text, RECOMMEND_COUNT) == 5


def test_forget_dead_workers_drops_their_live_gauges_only(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid no longer exists
    for name in (f"gauge_livemax_{gone.pid}.db", f"counter_{gone.pid}.db"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / f"gauge_livemax_{os.getpid()}.db").write_bytes(b"")
    assert forget_dead_workers(str(tmp_path)) == [gone.pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"counter_{gone.pid}.db", f"gauge_livemax_{os.getpid()}.db"]
    )


def test_metrics_dir_is_fresh_private_exported_and_removed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(METRICS_DIR_ENV, raising=False)
    with metrics_dir() as first:
        assert os.environ[METRICS_DIR_ENV] == str(first)
        assert list(first.iterdir()) == []
        assert stat.S_IMODE(first.stat().st_mode) == 0o700
        (first / "counter_1.db").write_bytes(b"old counts")
    assert METRICS_DIR_ENV not in os.environ
    assert not first.exists()
    with metrics_dir() as second:
        assert second != first and list(second.iterdir()) == []


def test_metrics_dir_is_removed_when_the_server_is_terminated() -> None:
    # uvicorn with one worker re-raises SIGTERM after its graceful shutdown
    with pytest.raises(SystemExit) as exited, metrics_dir() as path:
        os.kill(os.getpid(), signal.SIGTERM)
    assert exited.value.code == 128 + signal.SIGTERM
    assert not path.exists()


def test_app_without_the_variable_keeps_its_own_registry(
    settings: ServingSettings, clock: Clock
) -> None:
    apps = [create_app(settings, snapshots=FakeSnapshots(make_snapshot(CUSTOMERS)), clock=clock)]
    apps.append(create_app(settings, snapshots=FakeSnapshots(None), clock=clock))
    with TestClient(apps[0]) as a, TestClient(apps[1]) as b:
        a.post("/v1/recommendations", json={"customer_id": "c1"}, headers=CLIENT)
        assert "winback_decisions_total{" in a.get("/metrics").text
        assert "winback_decisions_total{" not in b.get("/metrics").text


@pytest.mark.skipif(
    getattr(values.ValueClass, "_multiprocess", False),
    reason="this test process was started with PROMETHEUS_MULTIPROC_DIR set",
)
def test_variable_set_after_import_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(METRICS_DIR_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match=f"{METRICS_DIR_ENV}=.*set it before the process"):
        Metrics()
