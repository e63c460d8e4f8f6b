"""How long the command line takes to start: `winback --help` against what it used to import.

Usage::

    .venv/bin/python bench/bench_cli_start.py [--runs 5] [--busy N] [--before DIR]

Each figure is the median wall time of `--runs` fresh interpreters, measured in this run:

- `python -c pass`: the interpreter alone (the floor);
- `winback --help`: the CLI as it starts now (every command imports its heavy libraries
  inside the command function);
- `--help before`: with `--before DIR`, the same command on another checkout of the
  repository (e.g. `git archive <commit> | tar -x -C DIR`), run by this interpreter with DIR
  first on `sys.path`: the CLI whose command modules imported pandas, scikit-learn and MLflow
  at module level, which is also what each `winback serve` worker imported before it could
  answer uvicorn's health check.

`--busy N` runs N busy-loop processes during the measurement (N = the CPU count reproduces
the loaded host of issue 15). The ratio `before / now` is the speed-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HELP = "import sys; sys.argv = ['winback', '--help']; from cli.main import main; main()"
BUSY = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"


def median_seconds(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--busy", type=int, default=0, help="busy-loop processes while measuring")
    ap.add_argument("--before", type=Path, help="an older checkout to compare with")
    args = ap.parse_args()
    busy = [subprocess.Popen([sys.executable, "-c", BUSY.format(s=600)]) for _ in range(args.busy)]
    try:
        floor = median_seconds([sys.executable, "-c", "pass"], args.runs)
        now = median_seconds([sys.executable, "-c", HELP], args.runs)
        before = None
        if args.before is not None:
            code = f"import sys; sys.path.insert(0, {str(args.before.resolve())!r}); {HELP}"
            before = median_seconds([sys.executable, "-c", code], args.runs)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    load = os.getloadavg()[0]
    print(f"busy loops: {args.busy}, load average (1 min) at the end: {load:.1f}")
    print(f"{'python -c pass':<16} {floor:6.2f} s")
    print(f"{'--help now':<16} {now:6.2f} s")
    if before is not None:
        print(f"{'--help before':<16} {before:6.2f} s")
        print(f"before / now: {before / now:.1f}x")


if __name__ == "__main__":
    main()
