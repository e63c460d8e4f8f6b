"""Wall time and peak memory of `winback generate` (generation plus writing Parquet).

Usage: .venv/bin/python bench/bench_generate.py --customers 1000000 [--seed 7] [--out DIR]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from features.synthetic.generate import generate_world, write_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="keep the data here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "world"
        t0 = time.perf_counter()
        world = generate_world(args.customers, args.seed)
        t1 = time.perf_counter()
        write_world(world, out)
        t2 = time.perf_counter()
        rows = {name: len(df) for name, df in world.tables.items()}
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"customers={args.customers:,} seed={args.seed}")
    print("rows: " + ", ".join(f"{k}={v:,}" for k, v in rows.items()))
    print(f"generate {t1 - t0:.1f}s  write {t2 - t1:.1f}s  total {t2 - t0:.1f}s")
    print(f"peak RSS {peak_kib / 1024**2:.2f} GiB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
