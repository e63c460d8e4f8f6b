"""The serving snapshot: contents, lookup speed, and swapping versions without a mixed view."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from features.build import build_customer_view
from features.snapshot import (
    Attachment,
    Snapshot,
    SnapshotError,
    SnapshotStore,
    current_version,
    write_snapshot,
)
from tests.factories import dataset, small_world


def write(root: Path, as_of: str) -> str:
    return write_snapshot(build_customer_view(dataset(small_world()), as_of), root)


def test_snapshot_holds_features_state_and_version(tmp_path: Path) -> None:
    view = build_customer_view(dataset(small_world()), "2023-10-01")
    version = write_snapshot(view, tmp_path)
    snap = Snapshot.load(tmp_path)
    assert snap.version == version == current_version(tmp_path)
    assert snap.feature_set == view.feature_set and snap.as_of == view.as_of
    np.testing.assert_array_equal(snap.get("c1"), view.features.loc["c1"].to_numpy())
    assert snap.get("nobody") is None and snap.state("nobody") is None
    state = snap.state("c2")
    assert state is not None
    assert state["consent_email"] == "opted_out" and state["consent_sms"] == "unknown"
    assert state["lapse_state"] == "lapsed" and state["last_offer_id"] is None
    assert snap.state("c1")["last_offer_id"] == "pct10"  # type: ignore[index]
    with pytest.raises(ValueError):
        snap.get("c1")[0] = 1.0  # type: ignore[index]  # read-only: no request can alter it


def test_missing_snapshot_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="no snapshot"):
        SnapshotStore(tmp_path).current()


def test_store_swaps_to_a_new_version_whole(tmp_path: Path) -> None:
    write(tmp_path, "2023-10-01")
    store = SnapshotStore(tmp_path)
    old = store.current()
    assert store.refresh() is False  # nothing new
    write(tmp_path, "2023-10-11")
    held = store.current()
    assert held is old  # not swapped until refresh
    assert store.refresh() is True
    new = store.current()
    assert new.version != old.version
    tenure = list(new.feature_set.columns).index("tenure_days")
    assert new.get("c1")[tenure] == old.get("c1")[tenure] + 10  # type: ignore[index]
    assert held.get("c1")[tenure] == old.get("c1")[tenure]  # type: ignore[index]


def test_readers_never_see_a_mixed_snapshot_while_versions_swap(tmp_path: Path) -> None:
    first = write(tmp_path, "2023-10-01")
    store = SnapshotStore(tmp_path)
    store.current()
    expected = {first: store.current().get("c1")[0]}  # type: ignore[index]
    errors: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            snap = store.current()  # one reference per "request"
            seen.add(snap.version)
            a, b = snap.get("c1"), snap.get("c2")
            assert a is not None and b is not None
            if a[0] - b[0] != 31:  # c1 signed up 31 days before c2, in every version
                errors.append(f"mixed rows in {snap.version}")
            time.sleep(0)  # let the writer run

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for day in range(2, 6):
        version = write(tmp_path, f"2023-10-{day:02d}")
        assert store.refresh()
        expected[version] = store.current().get("c1")[0]  # type: ignore[index]
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert len(seen) >= 2  # the readers really ran across swaps
    assert len(set(expected.values())) == len(expected)  # each version really differed
    assert len(list((tmp_path / "versions").iterdir())) == 3  # older versions pruned


def test_cli_materialize_and_contract_errors(tmp_path: Path) -> None:
    data_dir = small_world().write(tmp_path / "data")
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "features",
            "materialize",
            str(data_dir),
            "--as-of",
            "2023-10-01",
            "--out",
            str(tmp_path / "snap"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert len(Snapshot.load(tmp_path / "snap")) == 3
    broken = small_world().order("c1", "2023-04-01", revenue=-5.0).write(tmp_path / "bad")
    res = runner.invoke(
        app, ["features", "materialize", str(broken), "--out", str(tmp_path / "s2")]
    )
    assert res.exit_code == 1
    assert "data contract problem" in res.output and "orders.revenue" in res.output
    assert "Traceback" not in res.output


def test_cli_materialize_bad_feature_set_file_is_named(tmp_path: Path) -> None:
    data_dir = small_world().write(tmp_path / "data")
    bad = tmp_path / "fs.json"
    bad.write_text("not json", encoding="utf-8")
    res = CliRunner().invoke(
        app, ["features", "materialize", str(data_dir), "--feature-set", str(bad), "--out", "x"]
    )
    assert res.exit_code == 1
    assert "fs.json" in res.output and "invalid feature set JSON" in res.output


def test_cli_materialize_refuses_a_feature_set_and_a_model_together(tmp_path: Path) -> None:
    data_dir = small_world().write(tmp_path / "data")
    fs = tmp_path / "fs.json"
    fs.write_text("{}", encoding="utf-8")
    args = ["features", "materialize", str(data_dir), "--feature-set", str(fs)]
    res = CliRunner().invoke(app, [*args, "--model", "models:/m@x", "--out", str(tmp_path / "s")])
    assert res.exit_code == 1
    assert "--feature-set and --model: give one" in res.output
    assert not (tmp_path / "s").exists()  # nothing written


def test_pruning_keeps_the_newest_writes_not_the_latest_as_of(tmp_path: Path) -> None:
    data = dataset(small_world())
    late = write_snapshot(build_customer_view(data, "2024-01-01"), tmp_path, keep=2)
    early = [
        write_snapshot(build_customer_view(data, f"2023-0{m}-01"), tmp_path, keep=2) for m in (6, 7)
    ]
    kept = sorted(p.name for p in (tmp_path / "versions").iterdir())
    # the two most recent writes stay (and the last is current), whatever their as-of times
    assert set(kept) == set(early)
    assert late not in kept


def test_attachments_are_stored_read_only_and_checked(tmp_path: Path) -> None:
    view = build_customer_view(dataset(small_world()), "2023-10-01")
    n = len(view.features)
    scores = np.arange(n * 2, dtype=float).reshape(n, 2)
    att = Attachment({"p": scores}, {"model_version": "m/1"})
    write_snapshot(view, tmp_path, attachments={"scores": att})
    snap = Snapshot.load(tmp_path)
    got = snap.attachments["scores"]
    np.testing.assert_array_equal(got.arrays["p"], scores)
    assert got.meta == {"model_version": "m/1"}
    with pytest.raises(ValueError):
        got.arrays["p"][0, 0] = 1.0
    short = Attachment({"p": scores[:-1]}, {})
    with pytest.raises(SnapshotError, match=rf"attachment scores\.p: expected {n} rows"):
        write_snapshot(view, tmp_path, attachments={"scores": short})
    assert Snapshot.load(tmp_path).version == snap.version  # the failed write changed nothing


def test_a_crashed_writers_leftover_is_removed_but_not_a_fresh_one(tmp_path: Path) -> None:
    write(tmp_path, "2023-10-01")
    versions = tmp_path / "versions"
    old, fresh = versions / ".tmp-crashed", versions / ".tmp-writing-now"
    for d in (old, fresh):
        d.mkdir()
        (d / "features.npy").write_bytes(b"partial")
    day_ago = time.time() - 24 * 3600
    os.utime(old, (day_ago, day_ago))
    write(tmp_path, "2023-11-01")
    assert not old.exists() and fresh.exists()


def test_a_failed_load_is_remembered_until_the_next_refresh(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    with pytest.raises(SnapshotError, match="no snapshot"):
        store.current()
    assert store.error is not None
    version = write(tmp_path, "2023-10-01")
    for _ in range(3):  # the disk is not read again per call
        with pytest.raises(SnapshotError, match="no snapshot"):
            store.current()
    assert store.refresh() is True
    assert store.current().version == version and store.error is None


def test_a_failed_refresh_keeps_the_loaded_snapshot_and_says_why(tmp_path: Path) -> None:
    version = write(tmp_path, "2023-10-01")
    store = SnapshotStore(tmp_path)
    assert store.current().version == version
    (tmp_path / "CURRENT").write_text("no-such-version\n")
    with pytest.raises(SnapshotError, match="cannot read snapshot"):
        store.refresh()
    assert store.current().version == version
    assert "no-such-version" in str(store.error)
