"""Benchmark of the decision API over HTTP, as a share of the framework's own ceiling.

Usage::

    .venv/bin/python bench/bench_api.py [--world /tmp/wb_bench_1m] [--work /tmp/wb_bench_api]
        [--only ceiling,api,api-live,api-pg,bare,mlflow] [--backend lleaves] [--profile api]

Set-up (each step skipped when its output exists in `--work`): a 1,000,000-customer world
(`winback generate`, at `--world`), a training world of `--train-customers` (another seed),
`winback train` + `winback promote` into the work dir's own MLflow store (so the repo's
`mlruns/` is untouched), and `winback features materialize --model` of the big world as of the
day after its last order, twice: `snapshot_scored` stores the champion's scores of every
customer (`--scores`), `snapshot` does not (`--no-scores`).

Then, one server at a time on loopback, each stopped before the next starts:

1. `ceiling` (always run first): a FastAPI endpoint answering constant JSON
   (`bench/api_bare.py:ceiling_app`) under uvicorn with `--api-workers` workers, the same
   request bodies: the framework's ceiling. Every other target is printed as a share of it;
2. `api`: the decision API as `winback serve` runs it (uvicorn, `--api-workers` processes,
   JSON logs on, Prometheus metrics, SQLite store in WAL mode, a fresh database per run) on
   `POST /v1/recommendations` with `dry_run: false` and a new `request_id` per request, so
   every request records a decision (caps start blocking customers drawn twice); no
   `context.timestamp` (a recorded decision is made at the server's clock, so the snapshot's
   as_of lies in the past of every decision);
3. `api-live`: the same without stored scores (every request calls the boosters;
   `--backend lleaves` for compiled trees); `api-pg`: `api` on PostgreSQL (`--pg-url`, a
   database the bench drops and creates, `ANALYZE`d after each load run as autovacuum would
   keep it in a deployment; `--no-pg-analyze`: never);
4. `bench/api_bare.py`: FastAPI + the same `PolicyModel.score` on `--rows` snapshot rows;
5. `mlflow models serve` on the same registered model, `--rows` rows per request.

For each: the highest requests/s `wrk` sustains over `--duration` seconds with no error
(closed loop, each of `--connections`), and latency percentiles at a fixed rate of
`--paced-share` (default half) of that target's own maximum, from a paced client (asyncio
protocols on uvloop, `--paced-connections` keep-alive connections, default 64) that times
every request from its scheduled send time (so a stalled server is charged for the queue it
causes, in the client's queue as in its own), `--paced-repeats` times per rate (default 3;
the tables and the verdict take the run with the median p99 and list each run's: one run's
p99 swings widely near saturation); server CPU per request, and the cores the load
client and every other process used meanwhile (the machine may be shared: 'others'); for the
decision API, the mean size of the groups it decided together during the run and their mean
time in the decision thread (from its `/metrics`).
Customer ids are drawn from the snapshot with `--seed`, each run on its own slice. The API's
action mix and the number of decisions recorded are read back from its store. The issue 19
targets are printed with their verdicts. `--profile api` adds a py-spy profile of one worker
under load (py-spy on PATH, in the venv, or `PY_SPY=/path/to/py-spy`; it is not a project
dependency). Needs `wrk` (`apt-get install wrk`). Servers run with
`OMP_NUM_THREADS=--omp-threads` (default 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
API_KEY = "bench-key"
CHAMPION = "models:/winback-policy@champion"

WRK_LUA = r"""
local bodies, n, counter, tag = {}, 0, 0, "x"
function setup(thread) thread:set("tid", tostring(math.random(1, 1e9))) end
function init(args)
  for line in io.lines(args[1]) do n = n + 1; bodies[n] = line end
  tag = args[2] .. "-" .. tid
  counter = tonumber(args[3] or "0")
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-API-Key"] = "%KEY%"
end
function request()
  counter = counter + 1
  local b = string.gsub(bodies[(counter - 1) % n + 1], "@RID@", tag .. "-" .. counter)
  return wrk.format("POST", nil, nil, b)
end
function done(s, latency, requests)
  local e = s.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    s.requests, s.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
""".replace("%KEY%", API_KEY)


def _key_value(text: str) -> tuple[str, str]:
    """`KEY=VALUE` of `--server-env`."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


# --- set-up -------------------------------------------------------------------------------------
def _env(work: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINBACK_")}
    env |= {
        "WINBACK_MLRUNS_DIR": str(work / "mlruns"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlruns' / 'mlflow.db'}",
        "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
        **extra,
    }
    return env


def _run(cmd: str, env: dict[str, str]) -> None:
    """Run a winback command line (paths without spaces) from the repo root."""
    print("$", cmd, flush=True)
    subprocess.run(cmd.split(), env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def prepare(
    world: Path, work: Path, train_customers: int, seed: int
) -> tuple[Path, Path, pd.Timestamp]:
    """World, champion model, feature set and the 1M snapshots; returns (snapshot without
    scores, snapshot with the champion's scores stored, as_of)."""
    env = _env(work)
    winback = str(VENV_BIN / "winback")
    (work / "mlruns").mkdir(parents=True, exist_ok=True)
    if not (world / "offers.yaml").exists():
        _run(f"{winback} generate --customers 1000000 --seed {seed} --out {world}", env)
    train_world = work / "train_world"
    if not (train_world / "offers.yaml").exists():
        n, s = train_customers, seed + 4
        _run(f"{winback} generate --customers {n} --seed {s} --out {train_world}", env)
    promoted = work / "promoted"  # marker: the champion is registered in the work dir's store
    if not promoted.exists():
        _run(f"{winback} train {train_world} --seed {seed}", env)
        _run(f"{winback} promote {train_world}", env)
        promoted.touch()
    last = pd.read_parquet(world / "orders.parquet", columns=["order_ts"])["order_ts"].max()
    as_of = pd.Timestamp(last).normalize() + pd.Timedelta(days=1)
    snap, scored = work / "snapshot", work / "snapshot_scored"
    # the same features; `scored` also stores the champion's scores of every customer
    for out, source in ((snap, "--no-scores"), (scored, "--scores")):
        if not (out / "CURRENT").exists():
            _run(
                f"{winback} features materialize {world} --as-of {as_of.isoformat()} --out {out}"
                f" --model {CHAMPION} {source}",
                env,
            )
    return snap, scored, as_of


def _snapshot_ids(snap: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(customer ids, feature matrix (memory-mapped), column names) of the current version."""
    version = (snap / "CURRENT").read_text().strip()
    path = snap / "versions" / version
    ids = pd.read_parquet(path / "state.parquet", columns=["customer_id"])["customer_id"]
    manifest = json.loads((path / "manifest.json").read_text())
    cols = [f["name"] for f in manifest["feature_set"]["features"]]
    return ids.astype(str).to_numpy(), np.load(path / "features.npy", mmap_mode="r"), cols


def write_bodies(work: Path, snap: Path, n: int, rows: int, seed: int) -> dict[str, Path]:
    """One JSON body per line for each target, for the same seeded customer draw."""
    ids, matrix, cols = _snapshot_ids(snap)
    pick = np.random.default_rng(seed).integers(0, len(ids), size=n)
    out = {k: work / f"bodies_{k}.jsonl" for k in ("api", "bare", "mlflow")}
    for k in ("api-live", "api-pg", "api-baseline", "ceiling"):  # the ceiling: same bodies
        out[k] = out["api"]
    with out["api"].open("w") as a, out["bare"].open("w") as b:
        for i in pick:
            # no `context.timestamp`: a recorded decision is made at the server's clock (a
            # caller's time more than `clock_tolerance_seconds` from it is a 409), so the
            # snapshot's as_of lies in the past of every decision, as in production
            body = {
                "customer_id": ids[i],
                "channel": "auto",
                "dry_run": False,
                "request_id": "@RID@",
            }
            a.write(json.dumps(body) + "\n")
            b.write(json.dumps({"customer_id": ids[i]}) + "\n")
    with out["mlflow"].open("w") as m:
        for i in pick[:2000]:
            start = min(int(i), len(ids) - rows)
            data = np.asarray(matrix[start : start + rows], dtype=float)
            split = {
                "columns": cols,
                "data": [[None if np.isnan(x) else float(x) for x in r] for r in data],
            }
            m.write(json.dumps({"dataframe_split": split}) + "\n")
    return out


# --- servers ------------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start(name: str, cmd: str, env: dict[str, str], log: Path) -> Server:
    proc = subprocess.Popen(
        cmd.split(),
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return Server(name, f"http://127.0.0.1:{PORTS[name]}", proc)


STARTED = "Application startup complete"
"""What each uvicorn worker logs (at level info) once its lifespan start-up is done."""


def wait_ready(
    server: Server,
    path: str,
    body: str,
    headers: dict[str, str],
    timeout: float = 600,
    log: Path | None = None,
    workers: int = 0,
) -> None:
    """Once (given `log`) `workers` workers have logged the end of their start-up, poll until
    `path` answers 200 several times in a row fast, each on a new connection (so the polls
    reach every worker: `winback serve` gives each worker its own listening socket and the
    kernel spreads connections over them). Polls on one keep-alive connection reached one
    worker only, and the first load run could start while another still loaded its
    snapshot."""
    import httpx

    deadline, fast = time.monotonic() + timeout, 0

    def check() -> None:
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} did not start (exit {server.proc.poll()})")

    while log is not None and log.read_text(errors="replace").count(STARTED) < workers:
        check()
        time.sleep(0.5)
    fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection per poll
    with httpx.Client(base_url=server.url, timeout=60, headers=headers, limits=fresh) as client:
        while fast < 40:
            check()
            t = time.perf_counter()
            try:
                r = client.post(path, content=body.encode())
                ok = r.status_code == 200
            except httpx.TransportError:
                ok = False
            fast = fast + 1 if ok and time.perf_counter() - t < 0.1 else 0
            if not ok:
                time.sleep(0.5)


# --- load ---------------------------------------------------------------------------------------
def run_wrk(
    url: str, bodies: Path, tag: str, connections: int, duration: int, lua: Path, start: int = 0
) -> dict[str, float]:
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        "-s",
        str(lua),
        url,
        "--",
        str(bodies),
        tag,
        str(start),  # first body line: each run starts on customers not drawn yet
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    r = json.loads(line.removeprefix("WRKJSON "))
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    kinds = {k: r[k] for k in ("connect", "read", "write", "status", "timeout") if r[k]}
    return {
        "seconds": r["duration_us"] / 1e6,
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "errors": errors,
        "error_kinds": kinds,  # status = non-2xx answers
        "p50_ms": r["p50_us"] / 1e3,
        "p99_ms": r["p99_us"] / 1e3,
        "c": connections,
    }


class _PacedConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the paced client: one request in flight at a
    time, the response read by its Content-Length (uvicorn always sends one)."""

    def __init__(
        self,
        on_free: Callable[[_PacedConnection], None],
        on_lost: Callable[[_PacedConnection], None] | None = None,
    ) -> None:
        self.on_free = on_free
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.i = -1  # the request in flight
        self.due = 0.0
        self.lat: np.ndarray | None = None
        self.status: np.ndarray | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, i: int, due: float, request: bytes) -> None:
        self.i, self.due = i, due
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(self.buf[:head_end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = int(head[at + 17 : head.find(b"\r\n", at + 2)]) if at >= 0 else 0
        if len(self.buf) < head_end + 4 + length:
            return
        now = time.perf_counter()  # uvloop's loop.time() ticks in whole milliseconds
        assert self.lat is not None and self.status is not None
        self.status[self.i] = int(head[9:12])
        self.lat[self.i] = now - self.due
        del self.buf[: head_end + 4 + length]
        self.i = -1
        self.on_free(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.i >= 0 and self.status is not None and self.status[self.i] == 0:
            self.status[self.i] = -1
        if self.on_lost is not None:
            self.on_lost(self)


async def _paced(
    url: str, bodies: list[str], rate: float, duration: float, connections: int
) -> dict[str, float]:
    """Send `rate` requests/s for `duration` s over a pool of `connections` keep-alive
    connections (as a sender's HTTP client would hold), each request at its scheduled time on
    an idle connection, or as soon as one frees up, and time it from that scheduled time: a
    stalled server is charged for the queue it causes, in the client's queue as in its own.

    Written on asyncio's protocols rather than an HTTP client library: it shares the two cores
    with the server, and aiohttp's client took 0.33-0.57 cores at 1,400-2,300 req/s."""
    from collections import deque
    from urllib.parse import urlsplit

    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    head = (
        f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {API_KEY}\r\nContent-Length: "
    )
    total = int(rate * duration)
    lat = np.full(total, np.nan)
    status = np.zeros(total, dtype=np.int32)
    loop = asyncio.get_running_loop()
    # Idle connections are reused oldest first, so each one carries a request every
    # `connections / rate` seconds: reused newest first, the ones at the bottom idled past
    # the server's keep-alive timeout (uvicorn: 5 s) and were closed, and the pool shrank
    # (30 of 64 closed by the end of a 20 s run at 1,300/s). A connection the server closes
    # anyway is replaced, as a client's pool would.
    idle: deque[_PacedConnection] = deque()
    running = True
    waiting: deque[tuple[int, float]] = deque()  # due, no connection free yet
    run = f"paced-{os.getpid()}"  # each paced run its own keys (runs share a server)

    def request(i: int) -> bytes:
        body = bodies[i % len(bodies)].replace("@RID@", f"{run}-{i}").encode()
        return (head + f"{len(body)}\r\n\r\n").encode() + body

    def free(conn: _PacedConnection) -> None:
        if waiting:
            i, due = waiting.popleft()
            conn.send(i, due, request(i))
        else:
            idle.append(conn)

    pool: list[_PacedConnection] = []

    async def connect() -> _PacedConnection:
        _, conn = await loop.create_connection(lambda: _PacedConnection(free, lost), host, port)
        conn.lat, conn.status = lat, status
        pool.append(conn)
        return conn

    async def replace() -> None:
        with contextlib.suppress(OSError):
            free(await connect())

    def lost(conn: _PacedConnection) -> None:
        if running:
            replacements.append(loop.create_task(replace()))

    replacements: list[asyncio.Task[None]] = []
    for _ in range(connections):
        idle.append(await connect())
    t0 = time.perf_counter() + 0.05
    for i in range(total):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        while idle and idle[0].closed:
            idle.popleft()
        if idle:
            idle.popleft().send(i, due, request(i))
        else:
            waiting.append((i, due))
    deadline = time.perf_counter() + 5.0  # as the old client's per-request timeout
    while time.perf_counter() < deadline and (status == 0).any():  # 0: still in flight
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    running = False
    for task in replacements:
        task.cancel()
    await asyncio.gather(*replacements, return_exceptions=True)
    for conn in pool:
        if conn.transport is not None:
            conn.transport.close()
    ok = status == 200
    done = ~np.isnan(lat)
    return {
        "seconds": elapsed,
        "rps": ok.sum() / elapsed,
        "errors": float((~ok).sum()),
        "p50_ms": float(np.nanpercentile(lat, 50) * 1e3) if done.any() else float("nan"),
        "p99_ms": float(np.nanpercentile(lat, 99) * 1e3) if done.any() else float("nan"),
        "max_ms": float(np.nanmax(lat) * 1e3) if done.any() else float("nan"),
    }


def run_paced(
    url: str, bodies: Path, rate: float, duration: float, connections: int, start: int = 0
) -> dict[str, float]:
    """The paced client in its own process (0.15-0.20 cores at 1,400-2,500 req/s)."""
    cmd = [sys.executable, __file__, "--pace", url, str(bodies), str(rate), str(duration)]
    cmd += [str(connections), str(start)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group `pgid`."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ...
                total += int(fields[11]) + int(fields[12])
    return total / tick


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def action_mix(url: str) -> tuple[dict[str, int], dict[str, int]]:
    """Decisions by action, and the five commonest first reasons of `none` decisions."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as con:
            rows = con.execute(text("SELECT action, COUNT(*) FROM decisions GROUP BY action")).all()
            firsts = con.execute(
                text("SELECT reasons FROM decisions WHERE action = 'none'")
            ).scalars()
            why: dict[str, int] = {}
            for reasons in firsts:
                r = json.loads(reasons) if isinstance(reasons, str) else reasons
                key = str(r[0]) if r else "-"
                why[key] = why.get(key, 0) + 1
    finally:
        engine.dispose()
    top = dict(sorted(why.items(), key=lambda kv: -kv[1])[:5])
    return {str(a): int(n) for a, n in rows}, top


def fresh_pg_database(url: str) -> None:
    """Drop and create the database of `url` (the bench's own, never a shared one)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    u = make_url(url)
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as con:
            con.execute(text(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)'))
            con.execute(text(f'CREATE DATABASE "{u.database}"'))
    finally:
        admin.dispose()


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent not idle (all cores), from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


_GROUP_SERIES = (
    "winback_decision_group_size_count",
    "winback_decision_group_size_sum",
    "winback_decision_group_seconds_sum",
)


def group_totals(server: Server) -> tuple[float, ...] | None:
    """(groups, requests in them, seconds in the decision thread) so far, from the decision
    API's `/metrics` (all workers); None for another target or code without these metrics."""
    if server.name not in API_TARGETS:
        return None
    try:
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in _GROUP_SERIES:
            found[name] = float(value)
    return tuple(found[n] for n in _GROUP_SERIES) if len(found) == len(_GROUP_SERIES) else None


def accounted(server: Server, fn: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Run one load run; add server CPU ms per request, the cores other processes used and,
    for the decision API, the mean size and time of its groups during the run."""
    g0 = group_totals(server)
    busy0, srv0 = machine_busy_seconds(), group_cpu_seconds(server.proc.pid)
    cli0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = fn()
    wall = time.perf_counter() - t0
    cli1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    srv = group_cpu_seconds(server.proc.pid) - srv0
    cli = cli1.ru_utime + cli1.ru_stime - cli0.ru_utime - cli0.ru_stime
    done = r["rps"] * r.get("seconds", wall)
    r["server_cpu_ms"] = srv * 1e3 / max(done, 1)
    r["server_cores"] = srv / wall
    r["client_cores"] = cli / wall
    r["other_cores"] = max(machine_busy_seconds() - busy0 - srv - cli, 0.0) / wall
    g1 = group_totals(server)
    if g0 is not None and g1 is not None and g1[0] > g0[0]:
        groups = g1[0] - g0[0]
        r["group_size"] = (g1[1] - g0[1]) / groups
        r["group_ms"] = (g1[2] - g0[2]) * 1e3 / groups
    return r


def analyze_pg(url: str) -> None:
    """`ANALYZE` the bench's PostgreSQL database: what autovacuum does in a deployment
    (it is off on this project's machines, where the store's fresh tables would otherwise
    keep no statistics and grouped reads scan `contacts` whole)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as con:
            con.execute(text("ANALYZE"))
    finally:
        engine.dispose()


def measure(
    server: Server,
    path: str,
    bodies: Path,
    args: argparse.Namespace,
    lua: Path,
    after_run: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Every load run of one target; `after_run` is called after each (e.g. `analyze_pg`)."""
    url = server.url + path
    # each run starts on its own slice of the seeded draw, so no run re-asks earlier customers
    step = args.lines // load_runs(args)
    runs = []
    for i, c in enumerate(args.connections):
        wrk = partial(run_wrk, url, bodies, f"{server.name}{c}", c, args.duration, lua, i * step)
        runs.append(accounted(server, wrk))
        after_run()
    clean = [r for r in runs if r["errors"] == 0]
    best = max(clean, key=lambda r: r["rps"]) if clean else max(runs, key=lambda r: r["rps"])
    print(f"  {server.name}: wrk {runs}", flush=True)
    answered = sum(r["rps"] * r["seconds"] - r["errors"] for r in runs)
    if server.name in args.profile:
        answered += profile(server, path, bodies, args, lua, len(args.connections) * step)
    paced: dict[float, dict[str, float]] = {}
    if server.name != "ceiling":
        # at a share of this target's own maximum (the "half that maximum"), plus
        # any fixed rates; lowest first: an overloaded run leaves a backlog behind it
        rates = sorted({round(best["rps"] * args.paced_share), *args.rates})
        for j, rate in enumerate(rates):
            repeats = []
            for k in range(args.paced_repeats):
                start = (len(args.connections) + 1 + j * args.paced_repeats + k) * step
                q = accounted(
                    server,
                    partial(
                        run_paced, url, bodies, rate, args.duration, args.paced_connections, start
                    ),
                )
                repeats.append(q)
                after_run()
                answered += q["rps"] * q["seconds"]
                print(f"  {server.name}: paced {rate:.0f}/s {q}", flush=True)
            paced[rate] = median_run(repeats)
    return {"max": best, "all": runs, "paced": paced, "answered": answered}


LINES_PER_RUN_SECOND = 1000
"""Request bodies per second of each load run's own slice (a run above this rate re-asks
customers of the next slice, whom caps then block, as before the paced runs repeated)."""


def load_runs(args: argparse.Namespace) -> int:
    """Load runs of one target, each on its own slice of the bodies: every wrk run, the
    profile's, and every paced run (each rate, `--paced-repeats` times; at most this many)."""
    return len(args.connections) + 1 + (1 + len(args.rates)) * args.paced_repeats


def median_run(repeats: list[dict[str, float]]) -> dict[str, Any]:
    """The paced run with the median p99 of `repeats` (the upper one of an even count),
    with every run's p99 (`p99_runs`) and the errors of all of them: one run's p99 at a
    busy rate moved between 15 and 94 ms from run to run of the same code (bench/README.md,
    session s31), so a verdict on one run says little."""
    ordered = sorted(repeats, key=lambda q: q["p99_ms"])
    out: dict[str, Any] = dict(ordered[len(ordered) // 2])
    out["p99_runs"] = [q["p99_ms"] for q in repeats]
    out["errors"] = sum(q["errors"] for q in repeats)
    return out


def group_pids(pgid: int) -> list[int]:
    """Pids of process group `pgid` other than its leader (the uvicorn worker processes)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            if int(fields[2]) == pgid and pid != pgid:
                pids.append(pid)
    return sorted(pids)


def profile(
    server: Server, path: str, bodies: Path, args: argparse.Namespace, lua: Path, start: int
) -> float:
    """py-spy one worker under wrk load; print inclusive and own shares of the samples.
    Returns the requests answered meanwhile."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(VENV_BIN))
    spy = spy or os.environ.get("PY_SPY", "")
    workers = group_pids(server.proc.pid)  # the busiest is a worker, not a helper process
    workers.sort(
        key=lambda p: int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[11])
    )
    if not spy or not workers:
        print("profile skipped: py-spy not found (PY_SPY=path) or no worker process")
        return 0.0
    raw = args.work / f"profile_{server.name}.txt"
    cmd = [
        spy,
        "record",
        "--pid",
        str(workers[-1]),
        "--duration",
        str(args.duration - 2),
        "--rate",
        "250",
        "--format",
        "raw",
        "--nonblocking",
        "--gil",
        "-o",
        str(raw),
    ]
    spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    url = server.url + path
    c = min(args.connections)
    load = run_wrk(url, bodies, f"prof{server.name}", c, args.duration, lua, start)
    spy_proc.wait(60)
    incl: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].split("/")[-1] + ")"
            for f in stack.split(";")
        ]
        n = int(count)
        total += n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    print(
        f"\nprofile of worker {workers[-1]} under wrk at {load['rps']:,.0f} req/s "
        f"({total:,} samples, samples of the GIL holder; file {raw})"
    )
    for title, table in (("inclusive", incl), ("own", own)):
        print(f"  top {title}:")
        for f, n in sorted(table.items(), key=lambda kv: -kv[1])[: args.profile_top]:
            print(f"    {n / total:6.1%}  {f}")
    return float(load["rps"] * load["seconds"] - load["errors"])


PORTS = {
    "ceiling": 18430,
    "api": 18431,
    "api-live": 18434,
    "api-pg": 18435,
    "api-baseline": 18436,
    "bare": 18432,
    "mlflow": 18433,
}
PATHS = {
    "ceiling": "/ceiling",
    "api": "/v1/recommendations",
    "api-live": "/v1/recommendations",
    "api-pg": "/v1/recommendations",
    "api-baseline": "/v1/recommendations",
    "bare": "/score",
    "mlflow": "/invocations",
}
API_TARGETS = ("api", "api-live", "api-pg", "api-baseline")


def database_url(name: str, args: argparse.Namespace) -> str:
    return args.pg_url if name == "api-pg" else f"sqlite:///{args.work / 'bench.db'}"


def launch(
    name: str, args: argparse.Namespace, work: Path, snap: Path, scored: Path
) -> tuple[str, dict[str, str], str]:
    """(command line, environment, request path) of one target server."""
    port, bin_ = PORTS[name], VENV_BIN
    if name == "ceiling":  # the same uvicorn as `winback serve`: workers, no access log
        cmd = f"{bin_}/uvicorn bench.api_bare:ceiling_app --factory --port {port}"
        cmd += f" --workers {args.api_workers} --no-access-log --log-level warning"
        return cmd, _env(work), PATHS[name]
    if name in API_TARGETS:  # what `winback serve` runs, configured by WINBACK_*
        # api, api-pg: the snapshot carries the champion's scores (`materialize --model`),
        # looked up per request; api-live: no stored scores, every request calls the boosters
        env = _env(
            work,
            WINBACK_DATABASE_URL=database_url(name, args),
            WINBACK_SNAPSHOT_DIR=str(snap if name == "api-live" else scored),
            WINBACK_CATALOG_PATH=str(args.world / "offers.yaml"),
            WINBACK_POLICY_PATH=str(ROOT / "policy.example.yaml"),
            WINBACK_API_KEYS=API_KEY,
            WINBACK_MODEL_URI=CHAMPION,
            WINBACK_RELOAD_STATE_PATH=str(work / "reload.json"),
            # compiled trees only where the boosters run per request (api-live)
            WINBACK_MODEL_BACKEND=args.backend if name == "api-live" else "lightgbm",
            WINBACK_COMPILED_CACHE_DIR=str(work / "compiled"),  # not the repo's mlruns/
        )
        env |= args.server_env  # --server-env: settings under test (both api and baseline)
        if name == "api-baseline":  # the same, served by another checkout's venv
            bin_ = args.baseline_bin
        return f"{bin_}/winback serve --port {port} --workers {args.api_workers}", env, PATHS[name]
    w = args.side_workers
    if name == "bare":
        env = _env(work, BARE_SNAPSHOT_DIR=str(snap), BARE_MODEL_URI=CHAMPION)
        env["BARE_ROWS"] = str(args.rows)
        cmd = f"{bin_}/uvicorn bench.api_bare:app_from_env --factory --port {port} --workers {w}"
        return cmd + " --no-access-log", env, PATHS[name]
    cmd = f"{bin_}/mlflow models serve -m {CHAMPION} -h 127.0.0.1 -p {port} -w {w}"
    return cmd + " --env-manager local", _env(work), PATHS[name]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--world", type=Path, default=Path("/tmp/wb_bench_1m"))
    p.add_argument("--work", type=Path, default=Path("/tmp/wb_bench_api"))
    p.add_argument("--train-customers", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--duration", type=int, default=20, help="seconds per load run")
    p.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64])
    p.add_argument(
        "--paced-share",
        type=float,
        default=0.5,
        help="the paced latency run's rate, as a share of the target's own maximum",
    )
    p.add_argument(
        "--paced-repeats",
        type=int,
        default=3,
        help="paced runs per rate: the tables and the p99 verdict take the run with the median "
        "p99 and print every run's",
    )
    p.add_argument(
        "--paced-connections",
        type=int,
        default=64,
        help="keep-alive connections of the paced client (a request due while all are busy "
        "waits for one, timed from when it was due)",
    )
    p.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[],
        help="further fixed rates of paced latency runs (req/s)",
    )
    p.add_argument("--rows", type=int, default=10, help="rows per bare / mlflow request")
    p.add_argument("--api-workers", type=int, default=2, help="API and ceiling workers")
    p.add_argument("--side-workers", type=int, default=1, help="bare and mlflow workers")
    p.add_argument(
        "--omp-threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS for every server (0 = unset: LightGBM uses all cores per call, "
        "which stalls single-row predictions when the cores are busy)",
    )
    p.add_argument(
        "--backend",
        choices=("lightgbm", "lleaves"),
        default="lightgbm",
        help="WINBACK_MODEL_BACKEND of api-live (lleaves: compiled trees, cached in "
        "--work/compiled; the first start compiles them); every other target uses LightGBM",
    )
    p.add_argument(
        "--pg-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/winback_bench_api",
        help="api-pg's store; its database is dropped and created afresh (the bench's own)",
    )
    p.add_argument(
        "--pg-analyze",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ANALYZE api-pg's database after each load run, as autovacuum would keep its "
        "statistics in a deployment (autovacuum is off on this project's machines; without "
        "statistics the planner scans whole tables for grouped reads)",
    )
    p.add_argument(
        "--only",
        default="ceiling,api,api-live,api-pg,bare,mlflow",
        help="targets to run (ceiling: constant JSON; api: scores stored with the snapshot; "
        "api-live: scored per request; api-pg: api on PostgreSQL); the ceiling always runs",
    )
    p.add_argument(
        "--baseline-bin",
        type=Path,
        default=None,
        help="the bin/ of another checkout's venv (e.g. the main branch's): adds target "
        "api-baseline, `api` served by that code in the same run",
    )
    p.add_argument(
        "--server-env",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for every decision API server, after the bench's own "
        "(repeatable; e.g. WINBACK_WAL_CHECKPOINT_INTERVAL_SECONDS=0 to A/B a setting)",
    )
    p.add_argument("--profile", default="", help="targets to profile with py-spy (e.g. api)")
    p.add_argument("--profile-top", type=int, default=30)
    args = p.parse_args()
    if args.paced_repeats < 1:
        p.error(f"--paced-repeats: must be at least 1, got {args.paced_repeats}")
    args.server_env = dict(args.server_env)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    snap, scored, _ = prepare(args.world, work, args.train_customers, args.seed)
    # a slice of distinct draws per load run (repeating the paced runs does not shrink them)
    args.lines = LINES_PER_RUN_SECOND * args.duration * load_runs(args)
    bodies = write_bodies(work, snap, args.lines, args.rows, args.seed)
    lua = work / "post.lua"
    lua.write_text(WRK_LUA)
    results: dict[str, dict[str, Any]] = {}
    targets = ["ceiling", *(t for t in args.only.split(",") if t and t != "ceiling")]
    if args.baseline_bin is not None and "api-baseline" not in targets:
        targets.append("api-baseline")
    for name in targets:
        cmd, env, path = launch(name, args, work, snap, scored)
        if args.omp_threads > 0:  # LightGBM's OpenMP pool, per process (see --help)
            env["OMP_NUM_THREADS"] = str(args.omp_threads)
        if name in API_TARGETS:  # a fresh store per run
            for f in work.glob("bench.db*"):
                f.unlink()
            if name == "api-pg":
                fresh_pg_database(args.pg_url)
        first = bodies[name].read_text().splitlines()[0]
        warm = first.replace('"dry_run": false', '"dry_run": true')  # warm-up records nothing
        server = start(name, cmd, env, work / f"{name}.log")
        try:
            t = time.perf_counter()
            headers = {"Content-Type": "application/json", "X-API-Key": API_KEY}
            # the API's workers log at info; the ceiling's start at once (no lifespan work)
            workers = args.api_workers if name in API_TARGETS else 0
            wait_ready(server, path, warm, headers, log=work / f"{name}.log", workers=workers)
            print(f"{name} ready in {time.perf_counter() - t:.0f} s", flush=True)
            after = (
                partial(analyze_pg, args.pg_url)
                if name == "api-pg" and args.pg_analyze
                else lambda: None
            )
            results[name] = measure(server, path, bodies[name], args, lua, after)
        finally:
            server.stop()
        if name in API_TARGETS:
            results[name]["mix"] = action_mix(database_url(name, args))
    report(results, args)


def _groups(r: dict[str, Any]) -> str:
    """The group columns of one run ('-' where the target has no group metrics)."""
    if "group_size" not in r:
        return f"{'-':>7}{'-':>8}"
    return f"{r['group_size']:>7.1f}{r['group_ms']:>8.2f}"


LABELS = {
    "ceiling": "constant JSON, FastAPI, {w} w (ceiling)",
    "api": "decision API, {w} w, SQLite, stored",
    "api-live": "decision API, {w} w, SQLite, {backend}",
    "api-pg": "decision API, {w} w, PostgreSQL, stored",
    "api-baseline": "decision API, {w} w, SQLite, stored, baseline",
    "bare": "bare FastAPI, {rows} rows, {sw} worker",
    "mlflow": "mlflow models serve, {rows} rows, {sw} w",
}


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    omp = args.omp_threads or "unset"
    print(
        f"\nOMP_NUM_THREADS={omp}; api-live model backend {args.backend}; loopback; the 2 cores "
        f"are shared by servers, load clients and unrelated processes ('others': the cores "
        f"every other process used during the run); {args.duration} s per run\n"
    )
    labels = {
        k: v.format(w=args.api_workers, sw=args.side_workers, rows=args.rows, backend=args.backend)
        for k, v in LABELS.items()
    }
    ceiling = results["ceiling"]["max"]["rps"]
    head = (
        f"{'target':<42}{'req/s':>8}{'ceiling':>8}{'conns':>6}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'cpu ms/req':>11}{'others':>8}{'client':>8}{'group':>7}{'grp ms':>8}"
    )
    print("max sustained with no errors (wrk -t1, closed loop)\n" + head)
    for k, r in results.items():
        m = r["max"]
        print(
            f"{labels[k]:<42}{m['rps']:>8,.0f}{m['rps'] / ceiling:>8.1%}{m['c']:>6}"
            f"{m['p50_ms']:>8.1f}{m['p99_ms']:>8.1f}{m['server_cpu_ms']:>11.2f}"
            f"{m['other_cores']:>8.2f}{m['client_cores']:>8.2f}{_groups(m)}"
            + ("" if m["errors"] == 0 else f"  (no clean run; errors {m['error_kinds']})")
        )
    print("\nlatency at a fixed rate (paced client, from each request's scheduled time)")
    print(
        f"{'target':<42}{'rate':>6}{'ok/s':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'errors':>8}{'others':>8}{'group':>7}{'grp ms':>8}  p99 of each run"
    )
    for k, r in results.items():
        for rate, q in r["paced"].items():
            print(
                f"{labels[k]:<42}{rate:>6.0f}{q['rps']:>7.0f}{q['p50_ms']:>9.1f}"
                f"{q['p99_ms']:>9.1f}{q['max_ms']:>9.1f}{q['errors']:>8.0f}{q['other_cores']:>8.2f}"
                f"{_groups(q)}  {' / '.join(f'{x:.1f}' for x in q['p99_runs'])}"
            )
    print(
        f"(each rate run {args.paced_repeats} times; the row is the run with the median p99, "
        "errors summed over the runs; group: mean requests per group the API decided together "
        "in the run; grp ms: a group's mean time in the decision thread, engine and store "
        "transaction; '-': not the API, or code without the group metrics)"
    )
    print("\ntargets (issue 19; ratios to the ceiling measured in this run)")
    share = {"api": 0.25, "api-live": 0.10, "api-pg": 0.12}
    for k, need in share.items():
        if k not in results:
            continue
        m = results[k]["max"]
        ratio = m["rps"] / ceiling
        ok = ratio >= need and m["errors"] == 0
        print(
            f"  {labels[k]}: {m['rps']:,.0f} req/s = {ratio:.1%} of the ceiling "
            f"({ceiling:,.0f}), errors {m['errors']:.0f}; target >= {need:.0%} -> {_verdict(ok)}"
        )
    if "api" in results:
        api = results["api"]
        m = api["max"]
        print(
            f"  server CPU per recorded decision (api, at its maximum): "
            f"{m['server_cpu_ms']:.2f} ms; target < 1 ms -> {_verdict(m['server_cpu_ms'] < 1)}"
        )
        half = round(m["rps"] * args.paced_share)
        q = api["paced"].get(half)
        if q is not None:
            ok = q["p99_ms"] <= 20 and q["errors"] == 0
            runs = q["p99_runs"]
            print(
                f"  p99 at {half:,} req/s ({args.paced_share:.0%} of the api maximum): "
                f"{q['p99_ms']:.1f} ms, the median of {len(runs)} runs "
                f"({min(runs):.1f}-{max(runs):.1f}), {q['errors']:.0f} errors; target <= 20 ms "
                f"-> {_verdict(ok)}"
            )
        if "api-baseline" in results:
            b = results["api-baseline"]["max"]
            print(
                f"  api / api-baseline (--baseline-bin): req/s {m['rps'] / b['rps']:.2f}x, "
                f"server CPU per request {m['server_cpu_ms'] / b['server_cpu_ms']:.2f}x"
            )
        for k in ("bare", "mlflow"):
            if k in results:
                o = results[k]["max"]
                x = m["rps"] / o["rps"]
                bar = " (target >= 40x -> " + _verdict(x >= 40) + ")" if k == "mlflow" else ""
                print(
                    f"  api / {k}: req/s {x:.1f}x{bar}, server CPU per request "
                    f"{m['server_cpu_ms'] / o['server_cpu_ms']:.2f}x"
                )
    for k in API_TARGETS:
        if k not in results:
            continue
        mix, why = results[k]["mix"]
        total = sum(mix.values())
        print(
            f"{k}: decisions recorded {total:,} for {results[k]['answered']:,.0f} answered "
            "requests;",
            ", ".join(f"{a} {n / max(total, 1):.1%}" for a, n in sorted(mix.items())),
        )
        print("  first reason of 'none':", ", ".join(f"{r} {n:,}" for r, n in why.items()))


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "--pace":
        _, _, url, file, rate, dur, conns, first = sys.argv
        lines = Path(file).read_text().splitlines()
        lines = lines[int(first) :] + lines[: int(first)]
        try:
            import uvloop  # uvicorn[standard]'s loop: the client's CPU is the server's loss

            run_loop: Callable[[Any], Any] = uvloop.run
        except ImportError:
            run_loop = asyncio.run
        print(json.dumps(run_loop(_paced(url, lines, float(rate), float(dur), int(conns)))))
    else:
        main()
