"""Evaluation of a customer-sample run on every held-out row, partition by partition.

`train --sample-customers` keeps each partition's held-out rows in its own Parquet file
(`training.sampled_inputs.HeldOut`). Scoring them is the costly part (on the 10M world: the
cutoff's 7-8M customers and 2-3M later contacts, every bag of the response learner), and each
row's score depends on that row alone, so the files are scored one at a time, by `n_jobs`
worker processes side by side (`features.partitioned.map_partitions`; each loads the model
once and holds one partition's rows), optionally with the boosters compiled
(`scoring_model`; measured in bench/README.md). Only narrow results come back:
P(reactivation), label and slices per reactivation row
(`ReactivationScores`); the logged columns, the model's per-option probabilities, decision
values and economics per contact (`ScoredContacts`). The metrics are then computed once on
the concatenated results, exactly as on one frame: the bootstrap intervals resample every
held-out contact.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import joblib
import pandas as pd

from features import modeling_frame as mf
from features.frames import Frame
from features.partitioned import map_partitions
from models.policy_model import PolicyModel
from training.evaluate import (
    Evaluation,
    ReactivationScores,
    ScoredContacts,
    held_out_scored,
    reactivation_scores,
    report_reactivation,
    report_response,
    score_contacts,
)
from training.sampled_inputs import HeldOut

log = logging.getLogger("winback.training")
T = TypeVar("T")


@functools.lru_cache(maxsize=2)
def _model_file(path: str) -> PolicyModel:
    """The model a worker process scores with, loaded once per worker (compiled trees load
    their shared objects from the cache the caller compiled them into)."""
    model: PolicyModel = joblib.load(path)
    return model


def _reactivation_part(
    model: PolicyModel | str, files: list[Path], spec: mf.FrameSpec, seed: int, i: int
) -> ReactivationScores | None:
    m = _model_file(model) if isinstance(model, str) else model
    return reactivation_scores(m, Frame(pd.read_parquet(files[i]), spec), seed)


def _response_part(
    model: PolicyModel | str, files: list[Path], spec: mf.FrameSpec, seed: int, i: int
) -> ScoredContacts:
    m = _model_file(model) if isinstance(model, str) else model
    scored, _ = score_contacts(m, Frame(pd.read_parquet(files[i]), spec), seed)
    return scored


def scoring_model(
    model: PolicyModel, compiled: bool, cache: Path | None, jobs: int = 1
) -> PolicyModel:
    """The model the held-out rows are scored with: `model`, or with `compiled` a copy whose
    boosters run as compiled trees (`models.compiled`, `jobs` boosters compiled side by side
    into `cache`; scores equal LightGBM's to within 1e-9), falling back to `model` with a
    warning when they cannot be compiled."""
    if not compiled:
        return model
    from models.compiled import CompileError, compile_policy_model

    started = time.perf_counter()
    try:
        out = compile_policy_model(model, cache, jobs=jobs if cache is not None else 1)
    except CompileError as exc:
        log.warning("held-out rows scored by LightGBM: %s", exc)
        return model
    log.info("compiled the model's trees for scoring, %.1f s", time.perf_counter() - started)
    return out


class _Scorer:
    """Runs `fn(model, files, *args, i)` for every file i, in file order: in this process, or
    with `jobs` > 1 in worker processes (`features.partitioned.map_partitions`), which receive
    the model once, as a file written here."""

    def __init__(self, model: PolicyModel, folder: Path, jobs: int) -> None:
        self.model, self.folder, self.jobs = model, folder, jobs
        self.path: str | None = None

    def each(
        self, fn: Callable[..., T], files: list[Path], args: tuple[object, ...]
    ) -> Iterator[T]:
        if self.jobs <= 1 or len(files) <= 1:
            return (fn(self.model, files, *args, i) for i in range(len(files)))
        if self.path is None:
            self.path = str(self.folder / "model.joblib")
            joblib.dump(self.model, self.path)
        task = functools.partial(fn, self.path, files, *args)
        return map_partitions(task, range(len(files)), self.jobs)


def _timed(items: Iterable[T], what: str, total: int) -> Iterator[T]:
    started = time.perf_counter()
    for k, item in enumerate(items, 1):
        yield item
        log.info("%s: partition %d/%d, %.1f s", what, k, total, time.perf_counter() - started)


def evaluate_held_out(
    model: PolicyModel,
    held: HeldOut,
    ev: Evaluation,
    seed: int,
    ground_truth: pd.DataFrame | None = None,
    n_jobs: int = 1,
    reactivation: bool = True,
    response: bool = True,
    compiled: bool = False,
) -> None:
    """The reactivation and response metrics of `model` on every row of `held`.

    `compiled`: score with the boosters compiled (`scoring_model`): the same metrics to within
    rounding, a few times faster on millions of rows, after a compile of some seconds per
    booster.
    """
    spec = held.offer_response_spec
    react = reactivation and held.reactivation_spec is not None
    resp = response and spec is not None and bool(held.offer_response_files)
    if not (react or resp):
        return
    with tempfile.TemporaryDirectory(prefix="winback-eval-") as tmp:
        folder = Path(tmp)
        scoring = scoring_model(model, compiled, folder / "compiled", n_jobs)
        scorer = _Scorer(scoring, folder, n_jobs)
        if react:
            files = held.reactivation_files
            args = (held.reactivation_spec, seed)
            parts = scorer.each(_reactivation_part, files, args)
            scores = [s for s in _timed(parts, "reactivation scores", len(files)) if s is not None]
            report_reactivation(ReactivationScores.concat(scores) if scores else None, ev)
        if resp:
            files = held.offer_response_files
            parts_c = scorer.each(_response_part, files, (spec, seed))
            scored = ScoredContacts.concat(list(_timed(parts_c, "held-out contacts", len(files))))
    if resp:
        started = time.perf_counter()
        assert spec is not None
        # the metrics with the model itself: its metadata and options, not the scoring copy's
        report_response(model, held_out_scored(model, scored, spec), seed, ev, ground_truth)
        log.info(
            "response metrics on %d contacts, %.1f s", len(scored.df), time.perf_counter() - started
        )
