"""The feature engine on Spark (`local[2]`) writes the local engine's snapshot and frames.

"Bit for bit" here: against the local engine on the same partitioned directory
(`features.streaming`, what `winback features materialize|frames DIR` runs), the snapshot's
`features.npy` and `state.parquet` and both frame files are byte-identical, and the manifests
equal but for the version name and creation time (the Spark snapshot also holds its
partitioned copy `parts/`). Against the in-memory engine on the unpartitioned directory the
rows come in another order: sorted by customer id, the feature matrices are equal bit for bit
(NaN payloads included) and the state tables equal; the frames equal sorted by their keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import constants as c
from features.build import build_customer_view
from features.datadir import load_data_dir
from features.errors import FeaturesError
from features.frames import OFFER_RESPONSE_FILE, REACTIVATION_FILE, write_frames
from features.partitioned import write_partitioned
from features.snapshot import VERSIONS_DIR, current_version, partitioned_copy, write_snapshot
from features.streaming import materialize_partitioned, write_frames_partitioned
from features.synthetic.generate import generate_world, write_world

pytest.importorskip("pyspark")
N_PARTS = 3


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    from features.spark_features import spark_session

    session = spark_session("local[2]", "winback-test-features")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pd.Timestamp]:
    """A small world as an unpartitioned and a partitioned directory, and an as-of time."""
    root = tmp_path_factory.mktemp("world")
    write_world(generate_world(1500, 5), root / "flat")
    data = load_data_dir(root / "flat")
    raw = {name: pd.read_parquet(root / "flat" / f"{name}.parquet") for name in c.TABLES}
    write_partitioned(root / "part", raw, data.catalog, N_PARTS)
    as_of = pd.Timestamp(data.orders[c.ORDER_TS].max()) - pd.Timedelta(days=45)
    return root / "flat", root / "part", as_of


def _version(root: Path) -> Path:
    return root / VERSIONS_DIR / current_version(root)


def _manifest(path: Path) -> dict[str, object]:
    m = json.loads((path / "manifest.json").read_text())
    for key in ("version", "created", "partitioned"):
        m.pop(key, None)
    return m


def test_materialize_on_spark_writes_the_local_snapshot(
    spark: object, world: tuple[Path, Path, pd.Timestamp], tmp_path: Path
) -> None:
    from features.spark_features import materialize_spark

    flat, part, as_of = world
    seen: list[tuple[int, int]] = []
    run = materialize_spark(
        spark,  # type: ignore[arg-type]
        part,
        as_of,
        tmp_path / "spark",
        on_progress=lambda done, total: seen.append((done, total)),
    )
    materialize_partitioned(part, as_of, tmp_path / "local")
    write_snapshot(build_customer_view(load_data_dir(flat), as_of), tmp_path / "flat")
    s, loc = _version(tmp_path / "spark"), _version(tmp_path / "local")
    fl = _version(tmp_path / "flat")

    for name in ("features.npy", "state.parquet"):
        assert (s / name).read_bytes() == (loc / name).read_bytes(), name
    assert _manifest(s) == _manifest(loc)
    assert run.rows == len(np.load(s / "features.npy")) > 1000
    assert run.n_partitions == N_PARTS and seen[-1] == (N_PARTS, N_PARTS)

    # against the unpartitioned directory: the same rows, in customer-id order
    def by_id(path: Path) -> tuple[np.ndarray, pd.DataFrame]:
        state = pd.read_parquet(path / "state.parquet")
        order = np.argsort(state[c.CUSTOMER_ID].to_numpy(dtype=str), kind="stable")
        return np.load(path / "features.npy")[order], state.iloc[order].reset_index(drop=True)

    (ms, ss), (mf_, sf) = by_id(s), by_id(fl)
    assert ms.view(np.int64).tolist() == mf_.view(np.int64).tolist()
    pd.testing.assert_frame_equal(ss, sf)
    assert np.isnan(ms).any()  # NaN payloads were compared too

    copy = partitioned_copy(tmp_path / "spark")
    assert copy is not None and copy.n_customers == run.rows
    parts = sorted(p.name for p in copy.path.iterdir())
    assert parts == [f"part={k:03d}" for k in range(N_PARTS)]
    assert partitioned_copy(tmp_path / "local") is None


def test_frames_on_spark_equal_the_local_frames(
    spark: object, world: tuple[Path, Path, pd.Timestamp], tmp_path: Path
) -> None:
    from features.spark_features import frames_spark

    flat, part, _ = world
    _, built = frames_spark(spark, part, tmp_path / "spark")  # type: ignore[arg-type]
    streamed = write_frames_partitioned(part, tmp_path / "streamed")
    for name in (REACTIVATION_FILE, OFFER_RESPONSE_FILE):
        spark_file = (tmp_path / "spark" / name).read_bytes()
        assert spark_file == (tmp_path / "streamed" / name).read_bytes(), name
        assert built[name] == streamed[name]
    local = write_frames(load_data_dir(flat), tmp_path / "local")
    for name, key in (
        (REACTIVATION_FILE, [c.CUSTOMER_ID, "cutoff"]),
        (OFFER_RESPONSE_FILE, [c.CONTACT_ID]),
    ):
        got = pd.read_parquet(tmp_path / "spark" / name).sort_values(key, ignore_index=True)
        want = local[name].data.sort_values(key, ignore_index=True)
        pd.testing.assert_frame_equal(got, want, check_dtype=True)
        spec = built[name][0]
        assert spec.notes == local[name].spec.notes
        assert spec.feature_columns == local[name].spec.feature_columns


def test_spark_engine_needs_a_partitioned_directory(
    spark: object, world: tuple[Path, Path, pd.Timestamp], tmp_path: Path
) -> None:
    from features.spark_features import materialize_spark

    flat, _, as_of = world
    with pytest.raises(FeaturesError, match="partitioned data directory"):
        materialize_spark(spark, flat, as_of, tmp_path / "snap")  # type: ignore[arg-type]
