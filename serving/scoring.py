"""The `Scorer` protocol the API hands to the engine, and its alignment to the option set.

A scorer is whatever turns a feature matrix into, per customer and option, a probability of
conversion and an expected incremental margin (net of the incentive's cost). The registered
`winback-policy` MLflow package provides one; `None` means "no model": the engine then runs
rules only and every decision says `model_unavailable`.

A scorer names its own options (`option_ids`); `align_scores` maps them onto the engine's
`OptionSet` order, so a catalog offer the model has never seen gets NaN (never chosen by
value, though exploration may still pick it) instead of silently borrowing another's column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from serving.engine import OptionSet, Scores
from serving.errors import ModelUnavailableError

FloatMatrix = npt.NDArray[np.float64]


@runtime_checkable
class Scorer(Protocol):
    """A loaded policy model.

    Attributes:
        option_ids: the options it scores, in the column order of its outputs.
        version: recorded with every decision (e.g. `winback-policy/7`).
        feature_set_key: `name@version` of the feature set its columns follow.
    """

    @property
    def option_ids(self) -> Sequence[str]: ...

    @property
    def version(self) -> str: ...

    @property
    def feature_set_key(self) -> str: ...

    def score(self, features: FloatMatrix) -> tuple[FloatMatrix, FloatMatrix]:
        """(P, V), both (n, len(option_ids)): conversion probability and incremental margin."""
        ...


ScorerLoader = Callable[[str], Scorer]
"""Loads a scorer from a model URI (e.g. `models:/winback-policy@champion`); raises
`ModelUnavailableError` when nothing is registered or it cannot be loaded."""


def no_model_loader(uri: str) -> Scorer:
    """The loader used until a model package is wired in: always 'no model'."""
    raise ModelUnavailableError(
        f"model_uri: no scorer loader is configured, cannot load {uri!r}; deciding by rules only"
    )


def align_scores(scorer: Scorer, features: FloatMatrix, options: OptionSet) -> Scores:
    """Score `features` and reorder the columns to `options` (NaN for unknown options).

    Raises:
        ModelUnavailableError: the scorer failed or returned malformed output; the caller
            falls back to rules only.
    """
    n = features.shape[0]
    try:
        p_raw, v_raw = scorer.score(features)
        p = np.asarray(p_raw, dtype=np.float64)
        v = np.asarray(v_raw, dtype=np.float64)
    except Exception as exc:  # any failure of a loaded model is "model unavailable"
        raise ModelUnavailableError(
            f"model {scorer.version}: scoring failed: {type(exc).__name__}: {exc}"
        ) from None
    m = len(scorer.option_ids)
    if p.shape != (n, m) or v.shape != (n, m):
        raise ModelUnavailableError(
            f"model {scorer.version}: expected outputs of shape ({n}, {m}), "
            f"got {p.shape} and {v.shape}"
        )
    col = {oid: j for j, oid in enumerate(scorer.option_ids)}
    take = np.array([col.get(oid, -1) for oid in options.offer_ids], dtype=np.int64)
    known = take >= 0
    p_out = np.full((n, len(options)), np.nan)
    v_out = np.full((n, len(options)), np.nan)
    p_out[:, known] = p[:, take[known]]
    v_out[:, known] = v[:, take[known]]
    return Scores(p_convert=p_out, value=v_out, model_version=scorer.version)


def load_scorer(loader: ScorerLoader, uri: str) -> tuple[Scorer | None, str | None]:
    """(scorer, None) or (None, why not): a missing or broken model is not fatal."""
    if not uri:
        return None, "model_uri is empty: rules only"
    try:
        return loader(uri), None
    except ModelUnavailableError as exc:
        return None, str(exc)
    except Exception as exc:  # a broken package must not stop the service: rules only
        return None, f"model {uri}: cannot load: {type(exc).__name__}: {exc}"
