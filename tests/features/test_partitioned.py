"""Partitioned data directories: the partition-by-partition path gives exactly the in-memory
path's snapshot, frames and decisions on the same data; the layout is validated."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from features import constants as c
from features.build import build_customer_view
from features.datadir import load_data_dir, partition_data_dir, validate_data_dir
from features.errors import DataContractError, DataSourceError
from features.frames import write_frames
from features.modeling_frame import read_frame
from features.partition_layout import PARTITIONS_FILE, is_partitioned, read_layout
from features.partitioned import iter_partitions, write_partitioned
from features.partitions import partition_dir_name, partition_of
from features.snapshot import Attachment, Snapshot, write_snapshot
from features.snapshot_stream import SnapshotStream
from features.streaming import (
    materialize_partitioned,
    validate_partitioned,
    write_frames_partitioned,
)
from features.synthetic.blocks import generate_partitioned
from features.synthetic.generate import generate_world, write_world
from serving.batch.job import load_decider
from serving.batch.local import Wave, score_local
from serving.batch.output import open_output
from serving.precomputed import SCORES, scores_attachment, scores_meta
from serving.settings import ServingSettings

ROOT = Path(__file__).resolve().parents[2]
AS_OF = "2024-10-01"
AT = datetime(2024, 10, 2, 9, 0)


class AovScorer:
    """Scores that differ per customer and option, so decisions depend on the features."""

    version = "aov/1"

    def __init__(self, feature_set_key: str, columns: tuple[str, ...], options: list[str]):
        self.feature_set_key = feature_set_key
        self._aov = columns.index("aov_lifetime")
        self._options = options

    @property
    def option_ids(self) -> list[str]:
        return self._options

    def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        aov = np.nan_to_num(features[:, self._aov])
        slopes = np.linspace(0.01, 0.08, len(self._options))
        v = aov[:, None] * slopes[None, :] - 3.0
        p = np.clip(0.05 + aov[:, None] / 2000.0 + 0 * slopes[None, :], 0.0, 1.0)
        return p, v


def _both_ways(tmp: Path, n: int, parts: int) -> tuple[Path, Path]:
    world = generate_world(n, 11)
    write_world(world, tmp / "flat")
    write_partitioned(tmp / "part", world.tables, world.catalog, parts)
    return tmp / "flat", tmp / "part"


def _by_id(snap: Snapshot) -> tuple[list[str], np.ndarray]:
    ids = sorted(snap.row_of)
    return ids, np.array([snap.row_of[i] for i in ids], dtype=np.int64)


def _decisions(
    path: Path, snapshot: Snapshot | SnapshotStream, settings: ServingSettings, scorer: AovScorer
) -> pd.DataFrame:
    decider, error = load_decider(settings, lambda uri: scorer)
    assert error is None
    with open_output(path) as sink:
        score_local(snapshot, decider, sink, Wave("w-eq", AT, "auto"), chunk_rows=333)
    return pd.read_parquet(path).sort_values(c.CUSTOMER_ID).reset_index(drop=True)


def check_partitioned_equals_in_memory(tmp: Path, n: int, parts: int) -> None:
    flat, part = _both_ways(tmp, n, parts)
    data = load_data_dir(flat)
    # snapshot (with the model's stored scores)
    view = build_customer_view(data, AS_OF)
    options = [*data.catalog.offer_ids, c.NO_INCENTIVE]
    scorer = AovScorer(view.feature_set.key, view.feature_set.columns, options)
    att = scores_attachment(scorer, view.features.to_numpy(np.float64))
    write_snapshot(view, tmp / "snap_mem", attachments={SCORES: att})

    def attach(v: object) -> dict[str, dict[str, np.ndarray]]:
        m = v.features.to_numpy(np.float64)  # type: ignore[attr-defined]
        return {SCORES: dict(scores_attachment(scorer, m).arrays)}

    materialize_partitioned(
        part, AS_OF, tmp / "snap_part", attach=attach, attachment_meta={SCORES: scores_meta(scorer)}
    )
    mem, stream_snap = Snapshot.load(tmp / "snap_mem"), Snapshot.load(tmp / "snap_part")
    assert mem.feature_set == stream_snap.feature_set
    assert mem.as_of == stream_snap.as_of
    ids_a, rows_a = _by_id(mem)
    ids_b, rows_b = _by_id(stream_snap)
    assert ids_a == ids_b and len(ids_a) > 0.9 * n
    np.testing.assert_array_equal(mem.matrix[rows_a], stream_snap.matrix[rows_b])
    for name, col in mem.state_columns.items():
        assert col[rows_a].tolist() == stream_snap.state_columns[name][rows_b].tolist(), name
    for key in ("p", "value"):
        np.testing.assert_array_equal(
            mem.attachments[SCORES].arrays[key][rows_a],
            stream_snap.attachments[SCORES].arrays[key][rows_b],
        )
    # frames
    write_frames(data, tmp / "frames_mem")
    write_frames_partitioned(part, tmp / "frames_part")
    for name, keys in (
        ("reactivation.parquet", ["cutoff", c.CUSTOMER_ID]),
        ("offer_response.parquet", [c.CONTACT_ID]),
    ):
        a, spec_a = read_frame(tmp / "frames_mem" / name)
        b, spec_b = read_frame(tmp / "frames_part" / name)
        assert {**spec_a.__dict__, "source": ""} == {**spec_b.__dict__, "source": ""}
        a = a.sort_values(keys).reset_index(drop=True)
        b = b.sort_values(keys).reset_index(drop=True)
        assert len(a) > 0
        pd.testing.assert_frame_equal(a, b)
    # decisions: the loaded in-memory snapshot vs the partitioned one read as a stream
    settings = ServingSettings(
        database_url=f"sqlite:///{tmp}/absent.db",
        policy_path=ROOT / "policy.example.yaml",
        catalog_path=flat / c.OFFERS_FILE,
        model_uri="models:/aov@champion",
    )
    got_mem = _decisions(tmp / "d_mem.parquet", mem, settings, scorer)
    got_part = _decisions(
        tmp / "d_part.parquet", SnapshotStream.open(tmp / "snap_part"), settings, scorer
    )
    assert got_mem["action"].nunique() > 1
    pd.testing.assert_frame_equal(got_mem, got_part)


def test_partitioned_path_equals_in_memory_path(tmp_path: Path) -> None:
    check_partitioned_equals_in_memory(tmp_path, 3_000, 5)


@pytest.mark.slow
def test_partitioned_path_equals_in_memory_path_200k(tmp_path: Path) -> None:
    check_partitioned_equals_in_memory(tmp_path, 200_000, 8)


def test_layout_manifest_and_placement(tmp_path: Path) -> None:
    flat, part = _both_ways(tmp_path, 800, 3)
    assert is_partitioned(part) and not is_partitioned(flat)
    layout = read_layout(part)
    assert layout.n_partitions == 3 and layout.row_counts[c.CUSTOMERS] == 800
    seen = 0
    for p in iter_partitions(part):
        for name in c.TABLES:
            ids = p.data.table(name)[c.CUSTOMER_ID]
            assert (partition_of(ids.astype(str), 3) == p.index).all()
        seen += len(p.data.customers)
    assert seen == 800
    # the unpartitioned loader reads a partitioned directory whole
    whole = load_data_dir(part)
    assert len(whole.orders) == len(load_data_dir(flat).orders)


def _rewrite(part: Path, table: str, k: int, edit: object) -> None:
    files = sorted((part / table / partition_dir_name(k)).glob("*.parquet"))
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    for f in files:
        f.unlink()
    df = edit(df)  # type: ignore[operator]
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), files[0])


def test_validation_finds_misplaced_rows_and_keys_repeated_across_partitions(
    tmp_path: Path,
) -> None:
    _, part = _both_ways(tmp_path, 600, 3)
    assert validate_partitioned(part).ok
    other = pd.read_parquet(next((part / c.ORDERS / partition_dir_name(1)).glob("*.parquet")))
    # an order of a partition-1 customer copied into partition 0 (its order_id repeats too)
    _rewrite(part, c.ORDERS, 0, lambda df: pd.concat([df, other.head(2)], ignore_index=True))
    report = validate_partitioned(part)
    rules = {(p.table, p.rule) for p in report.problems}
    assert (c.ORDERS, "partition") in rules
    assert (c.ORDERS, "unique") in rules
    # the same copy shows as a missing customer within partition 0
    assert (c.ORDERS, "foreign_key") in rules
    with pytest.raises(DataContractError):
        list(iter_partitions(part))
    report2, data = validate_data_dir(part)
    assert data is None and not report2.ok


def test_order_id_repeated_in_two_partitions_is_found(tmp_path: Path) -> None:
    _, part = _both_ways(tmp_path, 600, 3)
    dup = pd.read_parquet(next((part / c.ORDERS / partition_dir_name(2)).glob("*.parquet")))
    dup_id = dup[c.ORDER_ID].iloc[0]

    def give_id(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df.loc[0, c.ORDER_ID] = dup_id
        return df

    _rewrite(part, c.ORDERS, 0, give_id)
    problems = validate_partitioned(part).problems
    assert [(p.table, p.rule, p.examples) for p in problems] == [
        (c.ORDERS, "unique", (repr(dup_id),))
    ]


def test_manifest_of_another_hash_is_refused(tmp_path: Path) -> None:
    _, part = _both_ways(tmp_path, 200, 2)
    raw = json.loads((part / PARTITIONS_FILE).read_text())
    raw["hash"] = "md5-something-else"
    (part / PARTITIONS_FILE).write_text(json.dumps(raw))
    with pytest.raises(DataSourceError, match="hash scheme"):
        read_layout(part)


def test_block_generator_equals_the_world_when_one_block(tmp_path: Path) -> None:
    world = generate_world(900, 5)
    generate_partitioned(900, 5, tmp_path / "g", 4, block_customers=1000)
    for name in c.TABLES:
        got = load_data_dir(tmp_path / "g").table(name)
        want = load_data_dir(_flat(tmp_path, world)).table(name)
        key = [k for k in (c.ORDER_ID, c.CONTACT_ID, c.EVENT_ID) if k in got.columns] or [
            c.CUSTOMER_ID,
            *[col for col in (c.CHANNEL, c.UPDATED_TS) if col in got.columns],
        ]
        pd.testing.assert_frame_equal(
            got.sort_values(key).reset_index(drop=True),
            want.sort_values(key).reset_index(drop=True),
            obj=name,
        )


def _flat(tmp: Path, world: object) -> Path:
    out = tmp / "flat"
    if not out.exists():
        write_world(world, out)  # type: ignore[arg-type]
    return out


def test_block_generator_many_blocks_is_valid_and_seeded(tmp_path: Path) -> None:
    generate_partitioned(1_000, 3, tmp_path / "a", 3, block_customers=300)
    generate_partitioned(1_000, 3, tmp_path / "b", 3, block_customers=300)
    assert validate_partitioned(tmp_path / "a").ok
    a, b = load_data_dir(tmp_path / "a"), load_data_dir(tmp_path / "b")
    for name in c.TABLES:
        pd.testing.assert_frame_equal(a.table(name), b.table(name))
    ids = a.customers[c.CUSTOMER_ID]
    assert ids.is_unique and len(ids) == 1_000
    assert a.orders[c.ORDER_ID].is_unique and a.contacts[c.CONTACT_ID].is_unique
    # later blocks are their own draws, not copies of block 0 under other ids
    block = a.orders[c.CUSTOMER_ID].str.slice(1).astype(int) // 300
    rev0 = np.sort(a.orders.loc[block == 0, c.REVENUE].to_numpy())
    rev1 = np.sort(a.orders.loc[block == 1, c.REVENUE].to_numpy())
    assert len(rev0) != len(rev1) or not np.array_equal(rev0, rev1)


def test_cli_generate_validate_partition_and_bad_partition(tmp_path: Path) -> None:
    from cli.main import app

    runner = CliRunner()
    out = tmp_path / "w"
    res = runner.invoke(
        app, ["generate", "--customers", "500", "--out", str(out), "--partitions", "3"]
    )
    assert res.exit_code == 0, res.output
    assert is_partitioned(out)
    assert runner.invoke(app, ["validate", str(out)]).exit_code == 0
    res = runner.invoke(
        app, ["partition", str(out), "--out", str(tmp_path / "p5"), "--partitions", "5"]
    )
    assert res.exit_code == 0, res.output
    assert read_layout(tmp_path / "p5").n_partitions == 5
    # the frames of the partitioned world, in two worker processes
    res = runner.invoke(
        app,
        ["features", "frames", str(tmp_path / "p5"), "--out", str(tmp_path / "fr"), "--jobs", "2"],
    )
    assert res.exit_code == 0, res.output
    assert "reactivation frame" in res.output
    assert len(read_frame(tmp_path / "fr" / "offer_response.parquet")[0]) > 0
    res = runner.invoke(app, ["features", "frames", str(out), "--out", "x", "--jobs", "0"])
    assert res.exit_code == 2 and "--jobs" in res.output
    # an unpartitioned world written over it is no longer partitioned
    res = runner.invoke(app, ["generate", "--customers", "200", "--out", str(out)])
    assert res.exit_code == 0 and not is_partitioned(out) and not (out / c.ORDERS).is_dir()
    # a row in the wrong partition: validate names the rule and exits 1
    res = runner.invoke(
        app, ["generate", "--customers", "300", "--out", str(out), "--partitions", "2"]
    )
    src = next((out / c.CONSENT / partition_dir_name(1)).glob("*.parquet"))
    shutil.copy(src, out / c.CONSENT / partition_dir_name(0) / "stray.parquet")
    res = runner.invoke(app, ["validate", str(out)])
    assert res.exit_code == 1 and "partition" in res.output


def test_partition_refuses_the_same_directory(tmp_path: Path) -> None:
    flat, _ = _both_ways(tmp_path, 100, 2)
    with pytest.raises(DataSourceError, match="another directory"):
        partition_data_dir(flat, flat, 2)


def test_snapshot_stream_reads_what_was_written(tmp_path: Path) -> None:
    _, part = _both_ways(tmp_path, 700, 3)
    materialize_partitioned(part, AS_OF, tmp_path / "s")
    snap, stream = Snapshot.load(tmp_path / "s"), SnapshotStream.open(tmp_path / "s")
    assert len(stream) == len(snap)
    chunks = list(stream.chunks(128))
    assert sum(len(ch.ids) for ch in chunks) == len(snap)
    ids = np.concatenate([ch.ids for ch in chunks])
    matrix = np.vstack([ch.matrix for ch in chunks])
    assert [snap.row_of[i] for i in ids] == list(range(len(snap)))
    np.testing.assert_array_equal(matrix, snap.matrix)
    assert Attachment  # the stored format is features.snapshot's


def test_worker_processes_give_the_same_report_snapshot_frames_and_errors(
    tmp_path: Path,
) -> None:
    """`--jobs 2` computes partitions in worker processes; the results are the same."""
    _, part = _both_ways(tmp_path, 700, 3)
    materialize_partitioned(part, AS_OF, tmp_path / "one")
    materialize_partitioned(part, AS_OF, tmp_path / "two", jobs=2)
    one, two = Snapshot.load(tmp_path / "one"), Snapshot.load(tmp_path / "two")
    assert one.row_of == two.row_of and len(one) > 0  # same ids in the same rows
    np.testing.assert_array_equal(one.matrix, two.matrix)
    for name, col in one.state_columns.items():
        assert col.tolist() == two.state_columns[name].tolist(), name
    # the frames: the same rows in the same order, the same spec, for any number of jobs
    frames_one = write_frames_partitioned(part, tmp_path / "frames_one")
    frames_two = write_frames_partitioned(part, tmp_path / "frames_two", jobs=2)
    assert frames_two == frames_one and len(frames_one) == 2
    for name, (_, rows) in frames_one.items():
        a, spec_a = read_frame(tmp_path / "frames_one" / name)
        b, spec_b = read_frame(tmp_path / "frames_two" / name)
        assert spec_a == spec_b and len(a) == rows > 0
        pd.testing.assert_frame_equal(a, b)
    other = pd.read_parquet(next((part / c.ORDERS / partition_dir_name(1)).glob("*.parquet")))
    _rewrite(part, c.ORDERS, 0, lambda df: pd.concat([df, other.head(2)], ignore_index=True))
    serial, parallel = validate_partitioned(part), validate_partitioned(part, jobs=2)
    assert not serial.ok
    assert parallel.problems == serial.problems and parallel.row_counts == serial.row_counts
    with pytest.raises(DataContractError):  # raised in a worker, with its type
        materialize_partitioned(part, AS_OF, tmp_path / "bad", jobs=2)
    with pytest.raises(DataContractError):
        write_frames_partitioned(part, tmp_path / "bad_frames", jobs=2)
    assert not (tmp_path / "bad_frames").exists()  # nothing half-written
    assert not list(tmp_path.glob(".frames-*"))  # nor the parts of the partitions built
    with pytest.raises(ValueError, match="jobs"):
        validate_partitioned(part, jobs=0)
