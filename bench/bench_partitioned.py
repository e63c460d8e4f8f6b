"""The partitioned chain on a large world, beside the in-memory chain on a smaller one.

    flock /work/quiet.lock .venv/bin/python bench/bench_partitioned.py [--customers 10000000]
        [--baseline-customers 1000000] [--partitions auto] [--jobs 2]
        [--work /tmp/bench-partitioned] [--keep] [--skip-baseline]

Runs each stage as its own `winback` process. Peak memory is the larger of the kernel's
ru_maxrss of that process (`os.wait4`) and the summed RSS of its process tree sampled every
0.2 s (with `--jobs 2`, `validate` and `features materialize` run two worker processes, whose
memory adds up). CPU seconds are the stage's user + system time, workers included: on a
shared machine, wall time over CPU time shows how much of a core the stage was given.

- partitioned, N customers: `generate --partitions P`, `validate`, `features materialize`,
  `score` (the snapshot read chunk by chunk);
- in-memory baseline, M customers (same run, same machine): `generate`, `validate`,
  `features materialize`, `score` of today's unpartitioned path.

Prints wall time and peak RSS per stage, the bars (each stage < 6 GB, the chain < 60 min),
and ratios against the baseline: peak RSS partitioned / in-memory, and time per customer
partitioned / in-memory. Scoring runs rules only (`WINBACK_MODEL_URI` empty): the bench
measures the data path, not a model. Data goes under --work and is removed unless --keep.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINBACK = str(Path(sys.executable).with_name("winback"))
GB = 1024**3
AS_OF = "2025-01-01"
DECIDE_AT = "2025-01-02"


@dataclass
class Stage:
    name: str
    seconds: float
    peak_bytes: int
    cpu_seconds: float


PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> int:
    """Summed RSS of `root` and its descendants, from /proc (bytes)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)  # fields[1]: ppid
        rss[pid] = int(fields[21]) * PAGE  # fields[21]: rss in pages
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


class TreePeak(threading.Thread):
    """Samples `tree_rss(pid)` every `every` seconds until stopped; keeps the largest."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak = pid, every, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.peak = max(self.peak, tree_rss(self.pid))


def run_stage(name: str, args: list[str], env: dict[str, str], winback: str) -> Stage:
    """Run one `winback` command; its wall time and peak RSS (ru_maxrss, KiB on Linux)."""
    start = time.perf_counter()
    cwd = Path(winback).resolve().parents[2]  # the checkout whose policy.example.yaml it reads
    proc = subprocess.Popen(
        [winback, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    sampler = TreePeak(proc.pid)
    sampler.start()
    output = proc.stdout.read()
    sampler.done.set()
    sampler.join()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stdout.write(output.decode(errors="replace")[-3000:])
        raise SystemExit(f"{name}: exit {proc.returncode}")
    cpu = usage.ru_utime + usage.ru_stime
    stage = Stage(name, seconds, max(usage.ru_maxrss * 1024, sampler.peak), cpu)
    print(
        f"  {name:<22} {seconds:8.1f} s  {stage.peak_bytes / GB:6.2f} GiB peak  {cpu:8.1f} s CPU",
        flush=True,
    )
    return stage


def chain(
    n: int,
    work: Path,
    partitions: int | None,
    env: dict[str, str],
    winback: str = WINBACK,
    jobs: int = 1,
) -> list[Stage]:
    data, snap, out = work / "data", work / "snapshot", work / "decisions.parquet"
    label = f"{partitions} partitions" if partitions else "in memory"
    print(f"{n:,} customers, {label}:", flush=True)
    gen = ["generate", "--customers", str(n), "--seed", "7", "--out", str(data)]
    if partitions:
        gen += ["--partitions", str(partitions)]
    stages = [run_stage("generate", gen, env, winback)]
    per_part = ["--jobs", str(jobs)] if partitions and jobs > 1 else []
    stages.append(run_stage("validate", ["validate", str(data), *per_part], env, winback))
    materialize = ["features", "materialize", str(data), "--as-of", AS_OF, "--out", str(snap)]
    materialize += per_part
    stages.append(run_stage("features materialize", materialize, env, winback))
    env = {**env, "WINBACK_CATALOG_PATH": str(data / "offers.yaml")}
    score = ["score", str(snap), "--out", str(out), "--as-of", DECIDE_AT, "--wave-id", "bench"]
    stages.append(run_stage("score", score, env, winback))
    return stages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=10_000_000)
    ap.add_argument("--baseline-customers", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=0, help="0: one per 125,000 customers")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-partitioned"))
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="worker processes of the partitioned validate "
        "and materialize (the in-memory baseline has none)",
    )
    ap.add_argument(
        "--baseline-winback",
        default=WINBACK,
        help="the `winback` of the baseline chain, e.g. an older checkout's .venv/bin/winback "
        "(this checkout's `score` streams a snapshot; an older one loads it whole)",
    )
    args = ap.parse_args()
    parts = args.partitions or max(1, -(-args.customers // 125_000))
    env = {
        **os.environ,
        "WINBACK_MODEL_URI": "",
        "WINBACK_DATABASE_URL": f"sqlite:///{args.work}/no-store.db",
    }
    results: dict[str, tuple[int, list[Stage]]] = {}
    try:
        if not args.skip_baseline:
            shutil.rmtree(args.work / "baseline", ignore_errors=True)
            base = chain(
                args.baseline_customers, args.work / "baseline", None, env, args.baseline_winback
            )
            results["baseline"] = (args.baseline_customers, base)
            if not args.keep:
                shutil.rmtree(args.work / "baseline", ignore_errors=True)
        shutil.rmtree(args.work / "partitioned", ignore_errors=True)
        part = chain(args.customers, args.work / "partitioned", parts, env, jobs=args.jobs)
        results["partitioned"] = (args.customers, part)
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    n, part = results["partitioned"]
    total = sum(s.seconds for s in part)
    cpu_total = sum(s.cpu_seconds for s in part)
    worst = max(s.peak_bytes for s in part)
    print()
    print(
        f"partitioned chain, {n:,} customers, {parts} partitions, --jobs {args.jobs}: "
        f"{total / 60:.1f} min total ({cpu_total / 60:.1f} CPU-min)"
    )
    print(
        f"  bar: every stage < 6 GB peak: {'met' if worst < 6e9 else 'MISSED'} "
        f"(largest {worst / 1e9:.2f} GB = {worst / GB:.2f} GiB)"
    )
    print(f"  bar: whole chain < 60 min: {'met' if total < 3600 else 'MISSED'} ({total:.0f} s)")
    if "baseline" in results:
        m, base = results["baseline"]
        print(
            f"ratios to the in-memory chain on {m:,} customers (same run, {args.baseline_winback}):"
        )
        print(f"  {'stage':<22} {'peak RSS':>10} {'s per 1M customers':>22}")
        for p, b in zip(part, base, strict=True):
            rss = p.peak_bytes / b.peak_bytes
            per_p, per_b = p.seconds / n * 1e6, b.seconds / m * 1e6
            print(
                f"  {p.name:<22} {rss:9.2f}x {per_p:9.1f} vs {per_b:7.1f} s ({per_p / per_b:.2f}x)"
            )


if __name__ == "__main__":
    main()
