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

import contextlib
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
from contextlib import contextmanager
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


def _serve_env(tmp_path: Path) -> dict[str, str]:
    """A rules-only server's settings in `tmp_path` (a model URI set, nothing registered)."""
    (tmp_path / "policy.yaml").write_text(POLICY_YAML, encoding="utf-8")
    (tmp_path / "offers.yaml").write_text(CATALOG_YAML, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINBACK_")}
    return env | {
        "WINBACK_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "WINBACK_POLICY_PATH": str(tmp_path / "policy.yaml"),
        "WINBACK_CATALOG_PATH": str(tmp_path / "offers.yaml"),
        "WINBACK_SNAPSHOT_DIR": str(tmp_path / "snapshot"),
        "WINBACK_RELOAD_STATE_PATH": str(tmp_path / "reload.json"),
        "WINBACK_MLRUNS_DIR": str(tmp_path / "mlruns"),
        "WINBACK_MODEL_URI": "models:/winback-policy@champion",
        "WINBACK_API_KEYS": "client-key",
    }


@contextmanager
def _two_workers(tmp_path: Path, port: int) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`winback serve --workers 2` on `port`, and its log file; terminated on exit."""
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(SCRIPT), "serve", "--workers", "2", "--port", str(port)],
            cwd=tmp_path,
            env=_serve_env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield server, log
    finally:
        server.terminate()
        server.wait(timeout=60)


def _started(log: Path) -> int:
    """Workers that finished their start-up so far (each logs it once, before listening)."""
    return log.read_text().count("Application startup complete")


def _wait_until_started(log: Path, n: int, deadline: float) -> list[int]:
    """Once `n` workers finished their start-up: the pids of those still alive."""
    while _started(log) < n:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    pids = [int(p) for p in re.findall(r"Started server process \[(\d+)\]", log.read_text())]
    return [p for p in pids if Path(f"/proc/{p}").exists()]


def _wait_for_replacement(log: Path, deadline: float) -> None:
    while "in its place" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.serial
@pytest.mark.skipif(not SCRIPT.exists(), reason="the winback console script is not installed")
def test_two_workers_become_ready_while_every_cpu_is_busy(tmp_path: Path, busy_cpus: int) -> None:
    port = _free_port()
    started = time.monotonic()
    with _two_workers(tmp_path, port) as (server, log):
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
        _wait_until_started(log, 2, started + READY_WITHIN)
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
        _wait_for_replacement(log, started + 2 * READY_WITHIN)
        assert f"worker [{worker}] was killed by SIGKILL; started worker [" in log.read_text()


def _listening(port: int) -> int:
    """Listening TCP sockets on `port` (from /proc/net/tcp and tcp6)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            n += int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "0A"  # 0A: LISTEN
    return n


def _open_pool(port: int, n: int) -> list[socket.socket]:
    """`n` keep-alive connections opened in one burst, as a client opens its pool, each
    answered once (so each has been accepted by a worker)."""
    conns = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    for c in conns:
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
    for c in conns:
        c.settimeout(30)
        c.sendall(request)
    for c in conns:
        assert c.recv(65536).startswith(b"HTTP/1.1 200"), "a connection was not answered"
    return conns


def _held_per_worker(pids: list[int], port: int) -> dict[int, int]:
    """Established connections on `port` held by each process of `pids` (from /proc)."""
    held: dict[int, int] = {}
    for pid in pids:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        held[pid] = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                local_port, state, inode = int(f[1].rsplit(":", 1)[1], 16), f[3], f[9]
                held[pid] += local_port == port and state == "01" and inode in inodes
    return held


def _spread_of_a_pool(pids: list[int], port: int) -> dict[int, int]:
    pool = _open_pool(port, 16)
    try:
        return _held_per_worker(pids, port)
    finally:
        for c in pool:
            c.close()


@pytest.mark.slow
@pytest.mark.skipif(not SCRIPT.exists(), reason="the winback console script is not installed")
@pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT") or not Path("/proc/net/tcp").exists(),
    reason="a socket per worker needs SO_REUSEPORT; reading sockets needs Linux's /proc",
)
def test_each_worker_listens_on_its_own_socket_and_a_dead_ones_is_not_left_listening(
    tmp_path: Path,
) -> None:
    """One shared socket let the first worker to wake accept a whole burst of connections
    (wrk -c 16: one worker served everything); each worker now listens on its own
    SO_REUSEPORT socket and the kernel spreads connections over them (the chance that 16 all
    hash to one of two sockets is 2 / 2**16). A killed worker's socket is closed and a new one
    only listens once its replacement has started: left listening, it would hold its share of
    new connections unanswered while the replacement loads. A second server on the same port
    is refused, as with one shared socket."""
    port = _free_port()
    deadline = time.monotonic() + 2 * READY_WITHIN
    with _two_workers(tmp_path, port) as (server, log):
        pids = _wait_until_started(log, 2, deadline)
        assert _listening(port) == 2
        held = _spread_of_a_pool(pids, port)
        assert sum(held.values()) == 16 and min(held.values()) > 0, held

        # a second server on the same port fails: SO_REUSEPORT alone would let it join the
        # first one's sockets and silently take a share of its connections
        other = tmp_path / "other"
        other.mkdir()
        second = subprocess.run(
            [str(SCRIPT), "serve", "--workers", "2", "--port", str(port)],
            cwd=other,
            env=_serve_env(other),
            capture_output=True,
            text=True,
            timeout=READY_WITHIN,
        )
        assert second.returncode == 3, second.stdout + second.stderr
        assert "Address already in use" in second.stdout + second.stderr
        assert _listening(port) == 2

        os.kill(pids[0], signal.SIGKILL)
        _wait_for_replacement(log, deadline)
        listening = _listening(port)
        if _started(log) < 3:  # the replacement has not listened yet (it logs before)
            assert listening == 1, "the dead worker's socket is still listening"
            survivor = [p for p in pids if p != pids[0]]
            assert _spread_of_a_pool(survivor, port) == {survivor[0]: 16}
        pids = _wait_until_started(log, 3, deadline)
        while _listening(port) < 2:  # the replacement listens right after its start-up
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert _listening(port) == 2
        held = _spread_of_a_pool(pids, port)
        assert sum(held.values()) == 16 and min(held.values()) > 0, held
        assert server.poll() is None, log.read_text()
