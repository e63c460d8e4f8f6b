"""The policy-value bootstrap on millions of logged rows, now and at an older commit.

    .venv/bin/python bench/bench_policy_bootstrap.py [--rows 2500000] [--resamples 30]
        [--before ff0a6ed~1]

`training.evaluate.report_response` bootstraps five policies' IPS, SNIPS and DR values and the
learned-minus-best-single difference on every held-out contact (300 resamples each on the 10M
world's 2.5M contacts). This bench times that work on synthetic rows (9 options, uniform
logging, 10% conversion) with `--resamples` resamples: the current code
(`bootstrap_policies`, one resampling for the table and the difference) beside
`training/policy_value.py` as it was at `--before` (read with `git show`; its
`evaluate_policies` and `policy_difference`, each resampling), in the same process. It prints
wall and CPU seconds per resample, their ratio, and the largest difference between the two
versions' interval ends (the same resamples: rounding only).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

import training.policy_value as now


def _before(commit: str) -> ModuleType:
    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(
        ["git", "show", f"{commit}:training/policy_value.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "policy_value_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("policy_value_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _rows(n: int) -> tuple[Any, dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    opts = [f"o{i}" for i in range(9)]
    labels = np.asarray(opts)
    logged = now.LoggedData.from_labels(
        opts, labels[rng.integers(0, 9, n)], np.full(n, 1 / 9), rng.random(n) < 0.1
    )
    policies = {
        "learned": now.deterministic_policy(labels[rng.integers(0, 9, n)], opts),
        "best_single": now.single_option_policy(n, opts, "o1"),
        "random": now.random_policy(n, opts),
        "no_contact": now.single_option_policy(n, opts, "o0"),
        "no_incentive": now.single_option_policy(n, opts, "o2"),
    }
    return logged, policies, rng.random((n, 9)) * 0.1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_500_000)
    ap.add_argument("--resamples", type=int, default=30)
    ap.add_argument("--before", default="ff0a6ed~1", help="commit of the older policy_value.py")
    args = ap.parse_args()
    old = _before(args.before)
    logged, policies, q = _rows(args.rows)
    b = args.resamples
    print(f"{args.rows:,} rows, 5 policies, {b} resamples (table and paired difference)")

    def current() -> Any:
        boot = now.bootstrap_policies(logged, policies, q=q, n_boot=b, seed=0)
        return boot.values(), boot.difference("learned", "best_single")

    def before() -> Any:
        values = old.evaluate_policies(logged, policies, q=q, n_boot=b, seed=0)
        diff = old.policy_difference(
            logged, policies["learned"], policies["best_single"], q=q, n_boot=b, seed=0
        )
        return values, diff

    results = {}
    for name, fn in (("before", before), ("now", current)):
        t, c = time.perf_counter(), time.process_time()
        results[name] = fn()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        results[name + "_s"] = (wall, cpu)
        print(f"  {name:7s} wall {wall:8.1f} s  CPU {cpu:8.1f} s  ({wall / b:.3f} s per resample)")
    (wb, cb), (wn, cn) = results["before_s"], results["now_s"]
    print(f"  ratio before / now: wall {wb / wn:.1f}x, CPU {cb / cn:.1f}x")
    cols = ["ci_low", "ci_high"]
    gap = max(
        float(
            np.nanmax(
                np.abs(results["now"][k][cols].to_numpy() - results["before"][k][cols].to_numpy())
            )
        )
        for k in (0, 1)
    )
    print(f"  largest difference between the versions' interval ends: {gap:.2e}")


if __name__ == "__main__":
    main()
