"""Evaluation of a customer-sample run on every held-out row, partition by partition.

`train --sample-customers` keeps each partition's held-out rows in its own Parquet file
(`training.sampled_inputs.HeldOut`). Scoring them is the costly part (on the 10M world: the
cutoff's 7-8M customers and 2-3M later contacts, every bag of the response learner), and each
row's score depends on that row alone, so the files are scored one at a time, by `n_jobs`
worker processes side by side (joblib; each loads the model once and holds one partition's
rows). Only narrow results come back: P(reactivation), label and slices per reactivation row
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
    """The model a worker process scores with, loaded once per worker."""
    model: PolicyModel = joblib.load(path)
    return model


def _reactivation_part(
    model: PolicyModel | str, path: Path, spec: mf.FrameSpec, seed: int
) -> ReactivationScores | None:
    m = _model_file(model) if isinstance(model, str) else model
    return reactivation_scores(m, Frame(pd.read_parquet(path), spec), seed)


def _response_part(
    model: PolicyModel | str, path: Path, spec: mf.FrameSpec, seed: int
) -> ScoredContacts:
    m = _model_file(model) if isinstance(model, str) else model
    scored, _ = score_contacts(m, Frame(pd.read_parquet(path), spec), seed)
    return scored


def _each(
    fn: Callable[..., T], model: PolicyModel, files: list[Path], args: tuple[object, ...], jobs: int
) -> Iterator[T]:
    """`fn(model, file, *args)` per file, in file order; with `jobs` > 1 in worker processes,
    which receive the model once, as a file."""
    if jobs <= 1 or len(files) <= 1:
        return (fn(model, f, *args) for f in files)
    return _in_workers(fn, model, files, args, min(jobs, len(files)))


def _in_workers(
    fn: Callable[..., T], model: PolicyModel, files: list[Path], args: tuple[object, ...], jobs: int
) -> Iterator[T]:
    with tempfile.TemporaryDirectory(prefix="winback-eval-") as tmp:
        path = str(Path(tmp) / "model.joblib")
        joblib.dump(model, path)
        yield from joblib.Parallel(n_jobs=jobs, return_as="generator")(
            joblib.delayed(fn)(path, f, *args) for f in files
        )


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
) -> None:
    """The reactivation and response metrics of `model` on every row of `held`."""
    if reactivation and held.reactivation_spec is not None:
        files = held.reactivation_files
        parts = _each(_reactivation_part, model, files, (held.reactivation_spec, seed), n_jobs)
        scores = [s for s in _timed(parts, "reactivation scores", len(files)) if s is not None]
        report_reactivation(ReactivationScores.concat(scores) if scores else None, ev)
    spec = held.offer_response_spec
    if response and spec is not None and held.offer_response_files:
        files = held.offer_response_files
        parts_c = _each(_response_part, model, files, (spec, seed), n_jobs)
        scored = ScoredContacts.concat(list(_timed(parts_c, "held-out contacts", len(files))))
        report_response(model, held_out_scored(model, scored, spec), seed, ev, ground_truth)
