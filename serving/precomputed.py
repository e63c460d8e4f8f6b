"""Model scores computed once per snapshot, so the request path looks them up.

A model's scores depend only on a customer's feature row, and the serving snapshot fixes
every row until the next snapshot. So `winback features materialize --model URI` scores the
whole snapshot once, in batch, and stores the result with it as the `scores` attachment
(`features.snapshot.Attachment`), tagged with the model version, its option ids and its
feature-set key. A request then reads its customer's row instead of calling the boosters.

The lookup is only used when it is exactly what live scoring would return: the scorer the
service runs must have the same version label (`winback-policy/7`), options and feature set
as the one recorded. After a promotion or a reload to another model, the stored scores no
longer match and every request scores live again (correct, only slower) until the next
snapshot is materialised with the new model. Customers not in the snapshot are scored live.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from features.snapshot import Attachment, Snapshot
from serving.scoring import Scorer

FloatMatrix = npt.NDArray[np.float64]

SCORES = "scores"
"""The snapshot attachment that holds precomputed scores."""

SCORE_CHUNK = 50_000
"""Rows per scoring call when precomputing (bounds the memory of one call)."""


def scores_attachment(
    scorer: Scorer, matrix: npt.NDArray[np.float64], chunk: int = SCORE_CHUNK
) -> Attachment:
    """Score every row of a snapshot matrix with `scorer`, as the `scores` attachment."""
    n, m = matrix.shape[0], len(scorer.option_ids)
    p = np.empty((n, m), dtype=np.float64)
    v = np.empty((n, m), dtype=np.float64)
    for start in range(0, n, chunk):
        part = slice(start, min(start + chunk, n))
        p[part], v[part] = scorer.score(matrix[part])
    return Attachment(arrays={"p": p, "value": v}, meta=scores_meta(scorer))


def scores_meta(scorer: Scorer) -> dict[str, Any]:
    """What the `scores` attachment records about the scorer that computed it."""
    return {
        "model_version": scorer.version,
        "option_ids": list(scorer.option_ids),
        "feature_set_key": scorer.feature_set_key,
    }


@dataclass(frozen=True, eq=False)
class PrecomputedScores:
    """The `scores` attachment of a snapshot, with what it was computed with."""

    p: FloatMatrix
    value: FloatMatrix
    model_version: str
    option_ids: tuple[str, ...]
    feature_set_key: str

    def serves(self, scorer: Scorer) -> bool:
        """Whether these are the scores `scorer` would compute (same model and options)."""
        return (
            scorer.version == self.model_version
            and tuple(scorer.option_ids) == self.option_ids
            and scorer.feature_set_key == self.feature_set_key
        )


_LAST: list[tuple[Snapshot, PrecomputedScores | None]] = []


def precomputed_scores(snapshot: Snapshot | None) -> PrecomputedScores | None:
    """The snapshot's precomputed scores, or None when it has none (or they are malformed).

    The answer for the last snapshot asked about is kept (a snapshot never changes; the API
    asks on every request and swaps snapshots rarely)."""
    if snapshot is None:
        return None
    last = _LAST[0] if _LAST else None
    if last is not None and last[0] is snapshot:
        return last[1]
    found = _read(snapshot)
    _LAST[:] = [(snapshot, found)]
    return found


def _read(snapshot: Snapshot) -> PrecomputedScores | None:
    return scores_from_attachments(snapshot.attachments)


def scores_from_attachments(attachments: Mapping[str, Attachment]) -> PrecomputedScores | None:
    """The stored scores among a snapshot's (or a chunk of its rows') attachments, if any."""
    att = attachments.get(SCORES)
    if att is None:
        return None
    p, v, meta = att.arrays.get("p"), att.arrays.get("value"), att.meta
    options = tuple(str(o) for o in meta.get("option_ids", ()))
    if p is None or v is None or p.shape != v.shape or p.ndim != 2 or p.shape[1] != len(options):
        return None
    return PrecomputedScores(
        p=p,
        value=v,
        model_version=str(meta.get("model_version", "")),
        option_ids=options,
        feature_set_key=str(meta.get("feature_set_key", "")),
    )


class SnapshotRowScorer:
    """A `Scorer` for given snapshot rows: their stored scores, live scoring for the rest.

    `rows[i]` is the snapshot row of the i-th feature row it is asked to score (-1 for a
    customer not in the snapshot, scored live by `scorer`).
    """

    def __init__(
        self, scorer: Scorer, stored: PrecomputedScores, rows: npt.NDArray[np.int64]
    ) -> None:
        self.scorer = scorer
        self.stored = stored
        self.rows = rows

    @property
    def option_ids(self) -> Sequence[str]:
        return self.scorer.option_ids

    @property
    def version(self) -> str:
        return self.scorer.version

    @property
    def feature_set_key(self) -> str:
        return self.scorer.feature_set_key

    def score(self, features: FloatMatrix) -> tuple[FloatMatrix, FloatMatrix]:
        rows = self.rows
        if features.shape[0] != len(rows):
            raise ValueError(f"expected {len(rows)} feature rows, got {features.shape[0]}")
        known = rows >= 0
        if known.all():
            return self.stored.p[rows], self.stored.value[rows]
        p = np.empty((len(rows), len(self.stored.option_ids)), dtype=np.float64)
        v = np.empty_like(p)
        p[known], v[known] = self.stored.p[rows[known]], self.stored.value[rows[known]]
        if (~known).any():
            lp, lv = self.scorer.score(features[~known])
            p[~known], v[~known] = lp, lv
        return p, v
