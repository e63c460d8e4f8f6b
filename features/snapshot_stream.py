"""Writing and reading a snapshot version a part at a time (the same files as `write_snapshot`).

`SnapshotWriter` writes a version from views that arrive one after another (one partition's
customers each): `features.npy` and every attachment array are written row block by row
block behind a header sized for the total row count, `state.parquet` one row group per
block, the manifest last; the version is renamed into place and made current only when
complete, as `features.snapshot.write_snapshot` does. Memory: one block.

`SnapshotStream` reads a version back in row chunks without loading it (no memory map: a
file read per chunk), for the batch scorer's pass over every customer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import constants as c
from features.build import CustomerView
from features.config import FeatureConfig
from features.featureset import FeatureSet
from features.snapshot import (
    CURRENT_FILE,
    MANIFEST,
    MATRIX,
    STATE,
    VERSIONS_DIR,
    Attachment,
    SnapshotError,
    _prune,
    current_version,
)


class _NpyAppender:
    """A `.npy` file of a known shape, written a row block at a time."""

    def __init__(self, path: Path, n_rows: int, dtype: np.dtype[Any], trailing: tuple[int, ...]):
        self.path, self.n_rows, self.dtype, self.trailing = path, n_rows, dtype, trailing
        self.written = 0
        self.fp: IO[bytes] = open(path, "wb")  # noqa: SIM115 (closed in close())
        header = {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": (n_rows, *trailing),
        }
        np.lib.format.write_array_header_2_0(self.fp, header)

    def add(self, block: np.ndarray) -> None:
        if block.shape[1:] != self.trailing or block.dtype != self.dtype:
            raise SnapshotError(
                f"{self.path.name}: block of shape {block.shape} {block.dtype}, "
                f"expected (*, {self.trailing}) {self.dtype}"
            )
        if self.written + len(block) > self.n_rows:
            raise SnapshotError(f"{self.path.name}: more than the {self.n_rows:,} rows declared")
        self.fp.write(np.ascontiguousarray(block).tobytes())
        self.written += len(block)

    def close(self) -> None:
        self.fp.close()
        if self.written != self.n_rows:
            raise SnapshotError(
                f"{self.path.name}: {self.written:,} rows written, {self.n_rows:,} declared"
            )


class SnapshotWriter:
    """A new snapshot version written block by block; `commit()` makes it current.

    Args:
        root: the snapshot directory.
        feature_set: the (frozen) feature set every block was computed with.
        as_of: the features' time.
        n_rows: how many customers all blocks hold together (the arrays' headers need it:
            `features.frozen.customers_before` counts them in the first pass).
        config: recorded in the manifest.
    """

    def __init__(
        self,
        root: Path,
        feature_set: FeatureSet,
        as_of: pd.Timestamp,
        n_rows: int,
        config: FeatureConfig | None = None,
    ) -> None:
        self.root, self.feature_set, self.as_of = Path(root), feature_set, as_of
        self.n_rows, self.config = n_rows, config or FeatureConfig()
        self.created = pd.Timestamp.now(tz="UTC").tz_localize(None)
        self.version = f"{as_of:%Y%m%dT%H%M%S}-{self.created:%Y%m%dT%H%M%S%f}"
        self.tmp = self.root / VERSIONS_DIR / f".tmp-{self.version}"
        self.tmp.mkdir(parents=True, exist_ok=False)
        self.matrix = _NpyAppender(
            self.tmp / MATRIX, n_rows, np.dtype(np.float64), (len(feature_set.columns),)
        )
        self.state: pq.ParquetWriter | None = None
        self.state_schema: pa.Schema | None = None
        self.arrays: dict[tuple[str, str], _NpyAppender] = {}
        self.rows = 0

    def add(self, view: CustomerView, attachments: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Append one block: its features, state and attachment rows (same row order)."""
        if view.feature_set.key != self.feature_set.key:
            raise SnapshotError(
                f"block computed with {view.feature_set.key}, snapshot is {self.feature_set.key}"
            )
        n = len(view.features)
        self.matrix.add(view.features.to_numpy(np.float64))
        table = pa.Table.from_pandas(view.state.reset_index(), preserve_index=False)
        if self.state is None:
            self.state_schema = table.schema
            self.state = pq.ParquetWriter(self.tmp / STATE, table.schema)
        assert self.state_schema is not None
        self.state.write_table(table.cast(self.state_schema))
        for name, arrays in attachments.items():
            for key, arr in arrays.items():
                if not (name.isidentifier() and key.isidentifier()):
                    raise SnapshotError(f"attachment {name}.{key}: names must be identifiers")
                if arr.ndim == 0 or arr.shape[0] != n:
                    raise SnapshotError(
                        f"attachment {name}.{key}: expected {n:,} rows, got shape {arr.shape}"
                    )
                out = self.arrays.get((name, key))
                if out is None:
                    out = _NpyAppender(
                        self.tmp / f"{name}.{key}.npy", self.n_rows, arr.dtype, arr.shape[1:]
                    )
                    self.arrays[(name, key)] = out
                out.add(arr)
        self.rows += n

    def commit(
        self, attachment_meta: Mapping[str, Mapping[str, Any]] | None = None, keep: int = 3
    ) -> str:
        """Close every file, write the manifest, rename the version into place, make it
        current, prune old versions; returns the version name."""
        self.matrix.close()
        for out in self.arrays.values():
            out.close()
        if self.state is None:  # no customer at all
            pd.DataFrame({c.CUSTOMER_ID: pd.Series([], dtype="string")}).to_parquet(
                self.tmp / STATE, index=False
            )
        else:
            self.state.close()
        names = sorted({name for name, _ in self.arrays})
        meta = dict(attachment_meta or {})
        manifest = {
            "version": self.version,
            "feature_set": self.feature_set.to_dict(),
            "feature_set_key": self.feature_set.key,
            "as_of": self.as_of.isoformat(),
            "created": self.created.isoformat(),
            "n_customers": self.rows,
            "feature_config": self.config.model_dump(),
            "attachments": {
                name: {
                    "arrays": [key for n, key in self.arrays if n == name],
                    "meta": dict(meta.get(name, {})),
                }
                for name in names
            },
        }
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        versions = self.root / VERSIONS_DIR
        os.replace(self.tmp, versions / self.version)
        pointer = self.root / f"{CURRENT_FILE}.tmp"
        pointer.write_text(self.version + "\n", encoding="utf-8")
        os.replace(pointer, self.root / CURRENT_FILE)
        _prune(versions, self.version, keep)
        return self.version


def _read_rows(path: Path, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a C-order `.npy` file, read (not mapped)."""
    with open(path, "rb") as fp:
        version = np.lib.format.read_magic(fp)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(fp)
        if fortran:
            raise SnapshotError(f"{path}: Fortran-ordered arrays are not supported")
        row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        stop = min(stop, shape[0])
        fp.seek(fp.tell() + start * row * dtype.itemsize)
        flat = np.fromfile(fp, dtype=dtype, count=max(stop - start, 0) * row)
    return flat.reshape((max(stop - start, 0), *shape[1:]))


@dataclass(frozen=True)
class SnapshotChunk:
    """Consecutive rows of a snapshot version: ids, feature rows, attachment rows."""

    start: int
    ids: np.ndarray
    matrix: np.ndarray
    attachments: dict[str, Attachment]


@dataclass(frozen=True)
class SnapshotStream:
    """A snapshot version opened for a pass over its rows, without loading them."""

    path: Path
    version: str
    as_of: pd.Timestamp
    feature_set: FeatureSet
    n_rows: int
    attachment_meta: dict[str, dict[str, Any]]

    @classmethod
    def open(cls, root: Path, version: str | None = None) -> SnapshotStream:
        """Open `version` (default: the current one) of snapshot directory `root`."""
        version = version or current_version(root)
        path = Path(root) / VERSIONS_DIR / version
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            n_rows = pq.ParquetFile(path / STATE).metadata.num_rows
            return cls(
                path=path,
                version=version,
                as_of=pd.Timestamp(manifest["as_of"]),
                feature_set=FeatureSet.from_dict(manifest["feature_set"]),
                n_rows=int(n_rows),
                attachment_meta={
                    name: {"arrays": list(a["arrays"]), "meta": dict(a.get("meta", {}))}
                    for name, a in manifest.get("attachments", {}).items()
                },
            )
        except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
            raise SnapshotError(f"{path}: cannot read snapshot: {exc}") from None

    def __len__(self) -> int:
        return self.n_rows

    def chunks(self, chunk_rows: int) -> Iterator[SnapshotChunk]:
        """The rows in order, `chunk_rows` at a time."""
        try:
            state = pq.ParquetFile(self.path / STATE)
            start = 0
            for batch in state.iter_batches(batch_size=chunk_rows, columns=[c.CUSTOMER_ID]):
                stop = start + batch.num_rows
                ids = np.asarray(batch.column(0).to_pylist(), dtype=object)
                matrix = _read_rows(self.path / MATRIX, start, stop)
                atts = {
                    name: Attachment(
                        {
                            key: _read_rows(self.path / f"{name}.{key}.npy", start, stop)
                            for key in a["arrays"]
                        },
                        a["meta"],
                    )
                    for name, a in self.attachment_meta.items()
                }
                yield SnapshotChunk(start, ids, matrix, atts)
                start = stop
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise SnapshotError(f"{self.path}: cannot read snapshot: {exc}") from None
