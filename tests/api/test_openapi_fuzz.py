"""Schemathesis against a real `winback serve --workers 2`, on SQLite and PostgreSQL.

Every check (`--checks all`: no 5xx, every status and body as documented, schema-valid
requests accepted, schema-violating ones rejected, 405 with `Allow`, ...) must pass with zero
failures. Bounded: a fixed seed and a few dozen examples per operation. Strings are valid
UTF-8 (`--generation-codec utf-8`): a lone surrogate is not text any store can keep. Two
cross-parameter rules OpenAPI cannot state are listed in `schemathesis.toml` beside this file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import write_files

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(url: str, tmp_path: Path) -> Iterator[str]:
    """A 2-worker server on `url`'s store, rules only; its base URL."""
    paths = write_files(tmp_path)
    port = _free_port()
    env = {
        **os.environ,
        "WINBACK_DATABASE_URL": url,
        "WINBACK_POLICY_PATH": str(paths["policy"]),
        "WINBACK_CATALOG_PATH": str(paths["catalog"]),
        "WINBACK_SNAPSHOT_DIR": str(tmp_path / "snapshot"),
        "WINBACK_MODEL_URI": "",
        "WINBACK_API_KEYS": "client-key",
        "WINBACK_ADMIN_KEYS": "admin-key",
        "WINBACK_RELOAD_STATE_PATH": str(tmp_path / "reload.json"),
        "WINBACK_LOG_LEVEL": "warning",
    }
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "winback"), "serve", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "the server did not come up in 120 s"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _schemathesis(
    base: str, key: str, workdir: Path, *selection: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN / "schemathesis"),
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            os.environ.get("WINBACK_FUZZ_EXAMPLES", "25"),
            "--seed",
            "0",
            "--generation-codec",
            "utf-8",
            "--header",
            f"X-API-Key: {key}",
            *selection,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_COLOR": "1"},
        cwd=workdir,  # its example cache (.schemathesis/) stays out of the repository
    )


def test_the_api_answers_as_its_openapi_says_for_any_input(server: str, tmp_path: Path) -> None:
    client = _schemathesis(
        server, "client-key", tmp_path, "--exclude-path-regex", "^/(admin|v1/reports)"
    )
    assert client.returncode == 0, client.stdout[-6000:]
    admin = _schemathesis(
        server, "admin-key", tmp_path, "--include-path-regex", "^/(admin|v1/reports)"
    )
    assert admin.returncode == 0, admin.stdout[-6000:]
    for run in (client, admin):
        assert "failures" not in run.stdout.splitlines()[-1], run.stdout[-3000:]
