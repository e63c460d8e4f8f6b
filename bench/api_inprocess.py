"""The decision API called in-process as an ASGI app (no HTTP, no client): CPU per request.

Usage (after `bench/bench_api.py` has prepared its work dir)::

    .venv/bin/python bench/api_inprocess.py --world /tmp/wb_bench_1m --work /tmp/wb_bench_api \
        [--requests 3000] [--profile out.pstats] [--live]

Builds the app as `winback serve` does (same `WINBACK_*` settings as `bench_api.py`'s `api`
target, JSON logs to /dev/null, a fresh SQLite database), drives `POST /v1/recommendations`
with the bench's request bodies (a new `request_id` each, so every request records a
decision; one at a time, or `--concurrency` at once, in waves, which the worker decides
together: `serving.api.microbatch`) straight through the ASGI interface, and prints the
process CPU time per request.
Load-independent enough to compare two versions of the request path on a shared machine
(CPU time, not wall time); `--profile` writes a cProfile of the loop. A development tool:
the figures that count are `bench_api.py`'s, over HTTP against the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _environment(world: Path, work: Path, db: Path, live: bool) -> None:
    for k in [k for k in os.environ if k.startswith("WINBACK_")]:
        del os.environ[k]
    os.environ |= {
        "WINBACK_MLRUNS_DIR": str(work / "mlruns"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlruns' / 'mlflow.db'}",
        "WINBACK_DATABASE_URL": f"sqlite:///{db}",
        "WINBACK_SNAPSHOT_DIR": str(work / ("snapshot" if live else "snapshot_scored")),
        "WINBACK_CATALOG_PATH": str(world / "offers.yaml"),
        "WINBACK_POLICY_PATH": str(ROOT / "policy.example.yaml"),
        "WINBACK_API_KEYS": "bench-key",
        "WINBACK_MODEL_URI": "models:/winback-policy@champion",
        "WINBACK_RELOAD_STATE_PATH": str(work / "reload_inprocess.json"),
        "WINBACK_COMPILED_CACHE_DIR": str(work / "compiled"),
        "WINBACK_REFRESH_INTERVAL_SECONDS": "0",
    }


async def _call(app: Any, body: bytes) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/recommendations",
        "raw_path": b"/v1/recommendations",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"x-api-key", b"bench-key"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False
    status, chunks = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def _run(args: argparse.Namespace) -> None:
    from serving.api.app import create_app
    from serving.api.logs import configure_logging
    from serving.model_scorer import mlflow_scorer_loader
    from serving.settings import get_serving_settings

    settings = get_serving_settings()
    configure_logging(settings.log_level)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - for the process's lifetime
    for h in logging.getLogger("winback").handlers:
        if isinstance(h, logging.StreamHandler):
            h.setStream(devnull)
    app = create_app(settings, scorer_loader=mlflow_scorer_loader())
    lines = (args.work / "bodies_api.jsonl").read_text().splitlines()
    async with app.router.lifespan_context(app):
        bodies = [
            lines[i % len(lines)].replace("@RID@", f"inproc-{i}").encode()
            for i in range(args.warmup + args.requests)
        ]
        for b in bodies[: args.warmup]:
            status, out = await _call(app, b)
            if status != 200:
                raise SystemExit(f"status {status}: {out[:300]!r}")
        prof = cProfile.Profile() if args.profile else None
        c0, t0 = time.process_time(), time.perf_counter()
        if prof is not None:
            prof.enable()
        statuses: dict[int, int] = {}
        timed = bodies[args.warmup :]
        for start in range(0, len(timed), args.concurrency):
            wave = timed[start : start + args.concurrency]
            for status, _ in await asyncio.gather(*(_call(app, b) for b in wave)):
                statuses[status] = statuses.get(status, 0) + 1
        if prof is not None:
            prof.disable()
            prof.dump_stats(args.profile)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    print(
        json.dumps(
            {
                "requests": args.requests,
                "concurrency": args.concurrency,
                "statuses": statuses,
                "cpu_ms_per_request": round(cpu / args.requests * 1e3, 4),
                "wall_ms_per_request": round(wall / args.requests * 1e3, 4),
                "load": os.getloadavg()[0],
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--world", type=Path, default=Path("/tmp/wb_bench_1m"))
    p.add_argument("--work", type=Path, default=Path("/tmp/wb_bench_api"))
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="requests sent at once, in waves (the worker decides each wave together)",
    )
    p.add_argument("--profile", type=Path, default=None, help="write a cProfile here")
    p.add_argument("--live", action="store_true", help="no stored scores (call the boosters)")
    p.add_argument("--db", type=Path, default=None, help="SQLite file (default: fresh in work)")
    args = p.parse_args()
    db = args.db or args.work / f"inprocess_{os.getpid()}.db"
    if db.exists():
        db.unlink()
    _environment(args.world, args.work, db, args.live)
    try:
        asyncio.run(_run(args))
    finally:
        for suffix in ("", "-wal", "-shm", "-writegate"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
