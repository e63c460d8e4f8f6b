"""`winback serve --workers 2` on a busy host: both workers come up and none is replaced.

uvicorn kills a worker that does not answer its health check in time. Each worker is a
spawned interpreter that first re-imports the `winback` script (the whole CLI), then the app;
while the CLI imported scikit-learn and MLflow at module level, a loaded host (12 s of
imports at load 9) saw the workers killed in a loop and the server never became ready.
This test starts the real command while every CPU runs a busy loop (bounded in time), with
a model URI configured (so each worker imports MLflow, as in production) but nothing
registered (rules only, so nothing is trained here).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import POLICY_YAML
from tests.factories import CATALOG_YAML

BUSY_SECONDS = 120  # the busy loops end by themselves even if this test is interrupted
READY_WITHIN = 90.0
SCRIPT = Path(sys.executable).with_name("winback")
BUSY = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def busy_cpus() -> Iterator[int]:
    n = os.cpu_count() or 2
    procs = [
        subprocess.Popen([sys.executable, "-c", BUSY.format(s=BUSY_SECONDS)]) for _ in range(n)
    ]
    try:
        yield n
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.slow
@pytest.mark.serial
@pytest.mark.skipif(not SCRIPT.exists(), reason="the winback console script is not installed")
def test_two_workers_become_ready_while_every_cpu_is_busy(tmp_path: Path, busy_cpus: int) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY_YAML, encoding="utf-8")
    (tmp_path / "offers.yaml").write_text(CATALOG_YAML, encoding="utf-8")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINBACK_")}
    env |= {
        "WINBACK_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "WINBACK_POLICY_PATH": str(tmp_path / "policy.yaml"),
        "WINBACK_CATALOG_PATH": str(tmp_path / "offers.yaml"),
        "WINBACK_SNAPSHOT_DIR": str(tmp_path / "snapshot"),
        "WINBACK_RELOAD_STATE_PATH": str(tmp_path / "reload.json"),
        "WINBACK_MLRUNS_DIR": str(tmp_path / "mlruns"),
        "WINBACK_MODEL_URI": "models:/winback-policy@champion",
        "WINBACK_API_KEYS": "client-key",
    }
    log = tmp_path / "serve.log"
    started = time.monotonic()
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(SCRIPT), "serve", "--workers", "2", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        ready_after = None
        while time.monotonic() - started < READY_WITHIN and server.poll() is None:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/readyz")
            except (OSError, ValueError):
                status = 0
            if status == 200:
                ready_after = time.monotonic() - started
                break
            time.sleep(0.5)
        # both workers finished their start-up (each logs it once)
        while log.read_text().count("Application startup complete") < 2:
            assert time.monotonic() - started < READY_WITHIN, log.read_text()
            time.sleep(0.5)
        time.sleep(3)  # a few more health checks, still under load
        text = log.read_text()
        assert ready_after is not None, f"not ready within {READY_WITHIN} s:\n{text}"
        assert body["ready"] is True
        assert "model_unavailable" in body["reasons"]  # rules only: nothing registered
        assert server.poll() is None, text
        assert "in its place" not in text and "died" not in text, text
        print(f"ready after {ready_after:.1f} s with {busy_cpus} busy CPU(s)")

        # a worker killed from outside is replaced, and the log says why
        worker = int(re.findall(r"Started server process \[(\d+)\]", text)[0])
        os.kill(worker, signal.SIGKILL)
        while "in its place" not in log.read_text():
            assert time.monotonic() - started < 2 * READY_WITHIN, log.read_text()
            time.sleep(0.5)
        assert f"worker [{worker}] was killed by SIGKILL; started worker [" in log.read_text()
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_a_workers_exit_is_described_by_code_or_signal() -> None:
    from serving.supervisor import exit_description

    assert exit_description(3) == "exited with code 3"
    assert exit_description(-9) == "was killed by SIGKILL"
    assert exit_description(None) == "is still running"
