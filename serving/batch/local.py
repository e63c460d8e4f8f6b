"""The local batch engine: the API's decision step over a snapshot, chunk by chunk.

Memory is bounded by the chunk: each chunk's feature rows are a view of (or gathered from)
the snapshot matrix, decided by `serving.decide.decide_rows` exactly as the API decides a
request, turned into output columns from the arrays, folded into the summary, optionally
recorded, and written before the next chunk starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from features.snapshot import Snapshot
from features.snapshot_stream import SnapshotStream
from serving.batch.columns import decision_table, wave_decision_ids
from serving.batch.errors import BatchError
from serving.batch.output import TableSink
from serving.batch.record import RECORD_BATCH, RecordCounts, record_rows
from serving.batch.summary import Summary
from serving.decide import Decided, Decider, decide_rows, decision_key, gather_rows
from serving.precomputed import PrecomputedScores, precomputed_scores, scores_from_attachments
from serving.store import ContactCaps, Store

DEFAULT_CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class Wave:
    """One scoring run: its id (the exploration key and the root of the decision ids), time
    and channel. An API call with `campaign_id=wave_id` at the same time decides alike."""

    wave_id: str
    at: datetime
    channel: str = "email"

    @property
    def key(self) -> str:
        return decision_key(self.at, None, self.wave_id)


@dataclass
class BatchResult:
    """What a run did."""

    rows: int = 0
    seconds: float = 0.0
    summary: Summary = field(default_factory=Summary)
    recorded: RecordCounts | None = None


def snapshot_ids(snapshot: Snapshot) -> npt.NDArray[np.object_]:
    """Customer ids in snapshot row order."""
    ids = np.empty(len(snapshot.row_of), dtype=object)
    ids[np.fromiter(snapshot.row_of.values(), np.int64, len(ids))] = list(snapshot.row_of)
    return ids


def chunks(
    snapshot: Snapshot, customers: Sequence[str] | None, chunk_rows: int
) -> Iterator[tuple[npt.NDArray[np.object_], npt.NDArray[np.float64], npt.NDArray[np.int64]]]:
    """(ids, feature rows, snapshot rows (-1 = not in it)) per chunk: the whole snapshot, or
    the listed customers."""
    if customers is None:
        ids = snapshot_ids(snapshot)
        for start in range(0, len(ids), chunk_rows):
            stop = min(start + chunk_rows, len(ids))
            yield ids[start:stop], snapshot.matrix[start:stop], np.arange(start, stop)
        return
    for start in range(0, len(customers), chunk_rows):
        part = list(customers[start : start + chunk_rows])
        matrix, rows = gather_rows(snapshot, part)
        yield np.asarray(part, dtype=object), matrix, rows


def _blocks(
    snapshot: Snapshot | SnapshotStream, customers: Sequence[str] | None, chunk_rows: int
) -> Iterator[
    tuple[
        npt.NDArray[np.object_],
        npt.NDArray[np.float64],
        npt.NDArray[np.int64],
        PrecomputedScores | None,
    ]
]:
    """(ids, feature rows, rows into `stored`, stored scores) per chunk. A `SnapshotStream`
    is read chunk by chunk (memory: one chunk), its stored scores with it."""
    if isinstance(snapshot, SnapshotStream):
        if customers is not None:
            raise BatchError("--customers: needs the snapshot loaded, not streamed")
        for chunk in snapshot.chunks(chunk_rows):
            rows = np.arange(len(chunk.ids), dtype=np.int64)
            yield chunk.ids, chunk.matrix, rows, scores_from_attachments(chunk.attachments)
        return
    stored = precomputed_scores(snapshot)
    for ids, matrix, rows in chunks(snapshot, customers, chunk_rows):
        yield ids, matrix, rows, stored


def _record(
    store: Store,
    table: pa.Table,
    decided: Decided,
    wave: Wave,
    caps: ContactCaps,
    into: RecordCounts,
) -> pa.Table:
    cols = table.to_pydict()
    for start in range(0, table.num_rows, RECORD_BATCH):
        rows = range(start, min(start + RECORD_BATCH, table.num_rows))
        into.add(record_rows(store, cols, decided, wave.at, wave.wave_id, caps, rows))
    return pa.Table.from_pydict(cols, schema=table.schema)


def score_local(
    snapshot: Snapshot | SnapshotStream,
    decider: Decider,
    sink: TableSink,
    wave: Wave,
    store: Store | None = None,
    record: bool = False,
    customers: Sequence[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_chunk: Callable[[int], None] | None = None,
) -> BatchResult:
    """Decide for every customer of `snapshot` (or of `customers`) and write to `sink`.

    Args:
        snapshot: the serving snapshot (features as of its `as_of`), loaded, or opened as a
            `SnapshotStream` to read it chunk by chunk (every customer, no `customers`).
        decider: options, policy, scorer and caps (as the API loads them).
        sink: receives one output table per chunk (see `serving.batch.output`).
        wave: wave id, decision time and channel.
        store: read for the live overlay (consent, preferences, recent contacts), as the API
            does; None decides from the snapshot alone.
        record: write the decisions to `store` (idempotent per wave id).
        customers: only these ids (unknown ones get `unknown_customer`).
        chunk_rows: customers per chunk.
        on_chunk: called with each chunk's row count (progress).
    """
    if record and store is None:
        raise BatchError("--record: no store to record to (set WINBACK_DATABASE_URL)")
    if customers is not None and not customers:
        raise BatchError("--customers: the list is empty")
    started = time.perf_counter()
    result = BatchResult(recorded=RecordCounts() if record else None)
    as_of = snapshot.as_of.to_pydatetime()
    for ids, matrix, rows, stored in _blocks(snapshot, customers, chunk_rows):
        decided = decide_rows(
            decider,
            matrix,
            rows >= 0,
            ids,
            snapshot.feature_set,
            as_of,
            wave.at,
            wave.channel,
            wave.key,
            store=store,
            stored=stored,
            rows=rows,
        )
        table = decision_table(
            decided.batch,
            wave_decision_ids(wave.wave_id, ids.tolist()),
            decided.value_tier,
            decided.lapse_state,
        )
        if record and store is not None and result.recorded is not None:
            table = _record(store, table, decided, wave, decider.base_caps, result.recorded)
        result.summary.add(table)
        sink.write(table)
        result.rows += len(ids)
        if on_chunk is not None:
            on_chunk(len(ids))
    result.seconds = time.perf_counter() - started
    return result


class RowsPerSecond(ProgressColumn):
    """Rows per second of a task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rows/s", style="progress.data.speed")


def rows_progress(console: Console | None = None) -> Progress:
    """A rich progress bar showing rows done, rows/s and time left."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RowsPerSecond(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
