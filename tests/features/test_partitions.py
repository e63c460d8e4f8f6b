"""The customer partition hash: stable across processes and releases, and a true partition."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from features.partitions import partition_dir_name, partition_of


def test_partition_values_are_pinned() -> None:
    # Golden values: a change here re-partitions every stored data directory.
    got = partition_of(["c000001", "c000002", "c123456", "é-ü"], 64).tolist()
    assert got == [18, 11, 13, 52]


def test_same_partition_in_a_fresh_process() -> None:
    code = (
        "from features.partitions import partition_of; "
        "print(partition_of(['c000001', 'x'], 7).tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(partition_of(["c000001", "x"], 7).tolist())


def test_every_id_lands_in_range_and_spreads() -> None:
    ids = pd.Series([f"c{i:07d}" for i in range(20_000)])
    parts = partition_of(ids, 16)
    assert parts.dtype == np.int32 and parts.min() >= 0 and parts.max() < 16
    counts = np.bincount(parts, minlength=16)
    assert counts.min() > 20_000 / 16 * 0.9  # no partition starved
    assert partition_of(np.array(ids, dtype=object), 16).tolist() == parts.tolist()


def test_bad_partition_count_names_the_field() -> None:
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="n_partitions"):
            partition_of(["a"], bad)  # type: ignore[arg-type]


def test_directory_name() -> None:
    assert partition_dir_name(7) == "part=007"
