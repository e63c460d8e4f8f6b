"""Compiled trees: a `PolicyModel` whose LightGBM boosters run as native code via `lleaves`.

`lleaves` compiles a LightGBM model text to machine code with LLVM. `compile_policy_model`
returns a copy of a `PolicyModel` in which every booster (response bags, reactivation, assignment
support) is replaced by a `CompiledBooster`. That class offers the part of `lightgbm.Booster`'s
interface that `models.base.predict_numpy` and `booster_predict` use, so scoring code runs
unchanged. The original model is left as it was.

Only the trees LightGBM itself would use are compiled: when early stopping kept fewer trees
than the booster holds, the model text is cut at `best_iteration`, the same rule as
`predict_numpy`. Categorical splits come from the model text, so the option-code column of the
S-learner and declared categorical features work as in LightGBM.

Compiling takes seconds per booster. Give `cache_dir` to keep the shared objects: each file is
named by the SHA-256 of the model text it came from, so a cache entry cannot belong to another
model (lleaves itself does not check that a cache file is up to date).

The optional extra `compiled` installs `lleaves` and a matching `llvmlite`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.errors import ModelsError

if TYPE_CHECKING:
    from models.policy_model import PolicyModel


class CompileError(ModelsError):
    """lleaves is missing or could not compile a booster."""

    code = "compile_failed"


def lleaves_available() -> bool:
    """Whether `lleaves` (and the llvmlite it needs) can be imported."""
    try:
        import lleaves  # noqa: F401
    except Exception:  # llvmlite raises OSError/ImportError when its native library is off
        return False
    return True


def kept_iterations(booster: Any) -> int:
    """Number of iterations LightGBM predicts with: best_iteration when early stopping cut."""
    best = int(booster.best_iteration)
    current = int(booster.current_iteration())
    return best if 0 < best < current else current


class CompiledBooster:
    """A compiled LightGBM booster behind the `Booster.predict` calls scoring makes.

    Attributes:
        best_iteration: always 0: the compiled trees are already the kept ones.
        model_sha256: SHA-256 of the LightGBM model text that was compiled.
    """

    best_iteration = 0

    def __init__(
        self,
        model: Any,
        n_iterations: int,
        model_text: str,
        cache_dir: Path | None = None,
    ) -> None:
        self._model = model
        self._n_iterations = n_iterations
        self._model_text = model_text
        self._cache_dir = cache_dir
        self.model_sha256 = hashlib.sha256(model_text.encode()).hexdigest()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # native code cannot be pickled: ship the model text and compile again on arrival
        # (a Spark executor, a worker process), through the cache when there is one
        return (_compile_text, (self._model_text, self._n_iterations, self._cache_dir))

    def current_iteration(self) -> int:
        return self._n_iterations

    def num_trees(self) -> int:
        return int(self._model.num_trees())

    def predict(
        self, X: Any, num_iteration: int | None = None, num_threads: int = 0, **_: Any
    ) -> np.ndarray:
        """Predictions like `Booster.predict` (probabilities; (n, k) for multiclass).

        `num_iteration` may only ask for the compiled trees (None, <= 0 or their count):
        asking for fewer cannot be honoured without recompiling. `num_threads` <= 0 means all
        cores, as in LightGBM.
        """
        if num_iteration is not None and 0 < num_iteration != self._n_iterations:
            raise ValueError(
                f"num_iteration={num_iteration}: the compiled model holds exactly "
                f"{self._n_iterations} iterations"
            )
        n_jobs = num_threads if num_threads > 0 else (os.cpu_count() or 1)
        if hasattr(X, "to_numpy"):
            X = X.to_numpy(dtype=np.float64)
        arr = np.ascontiguousarray(X, dtype=np.float64)
        # small inputs on one thread: a thread pool costs more than it saves there
        n_jobs = 1 if arr.shape[0] < 2_000 else n_jobs
        return np.asarray(self._model.predict(arr, n_jobs=n_jobs), dtype=float)


def compile_booster(booster: Any, cache_dir: Path | None = None) -> CompiledBooster:
    """Compile one `lightgbm.Booster` (only its kept trees) with lleaves.

    Raises:
        CompileError: lleaves is not installed or cannot compile the booster.
    """
    n_iter = kept_iterations(booster)
    return _compile_text(booster.model_to_string(num_iteration=n_iter), n_iter, cache_dir)


def _compile_text(text: str, n_iter: int, cache_dir: Path | None) -> CompiledBooster:
    try:
        import lleaves
    except Exception as exc:
        raise CompileError(
            f"compiled backend: lleaves is not importable ({exc}); "
            "install the extra: pip install 'winback[compiled]'"
        ) from None
    sha = hashlib.sha256(text.encode()).hexdigest()
    with tempfile.TemporaryDirectory(prefix="winback-lleaves-") as tmp:
        model_file = Path(tmp) / "model.txt"
        model_file.write_text(text)
        try:
            model = lleaves.Model(model_file=str(model_file))
            if cache_dir is None:
                model.compile()
            else:
                cache_dir.mkdir(parents=True, exist_ok=True)
                final = cache_dir / f"{sha[:32]}.so"
                if final.exists():
                    model.compile(cache=str(final))
                else:
                    # write beside, then rename: a concurrent reader never sees half a file
                    partial = cache_dir / f".{sha[:32]}.{os.getpid()}.partial"
                    model.compile(cache=str(partial))
                    os.replace(partial, final)
        except Exception as exc:
            raise CompileError(f"compiled backend: lleaves failed on a booster: {exc}") from None
    return CompiledBooster(model, n_iter, text, cache_dir)


def _with_booster(estimator: Any, cache_dir: Path | None) -> Any:
    out = copy.copy(estimator)
    out.booster_ = compile_booster(estimator.booster_, cache_dir)
    return out


def _all_boosters(model: PolicyModel) -> list[Any]:
    out: list[Any] = []
    if model.response is not None:
        for bag in model.response.models_:
            out.extend(bag if isinstance(bag, list | tuple) else [bag])
    out.extend(m.booster_ for m in (model.reactivation, model.support) if m is not None)
    return out


def _into_cache(text: str, n_iter: int, cache_dir: Path) -> None:
    _compile_text(text, n_iter, cache_dir)


def _warm_cache(model: PolicyModel, cache_dir: Path, jobs: int) -> None:
    """Compile every booster of `model` into `cache_dir`, `jobs` boosters side by side in
    worker processes (LLVM compiles one booster on one core)."""
    from joblib import Parallel, delayed

    texts = []
    for booster in _all_boosters(model):
        n_iter = kept_iterations(booster)
        text = booster.model_to_string(num_iteration=n_iter)
        final = cache_dir / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.so"
        if not final.exists():
            texts.append((text, n_iter))
    if len(texts) > 1:
        Parallel(n_jobs=min(jobs, len(texts)))(
            delayed(_into_cache)(text, n_iter, cache_dir) for text, n_iter in texts
        )


def compile_policy_model(
    model: PolicyModel, cache_dir: Path | None = None, jobs: int = 1
) -> PolicyModel:
    """A copy of `model` whose boosters are compiled; scores match LightGBM to within 1e-9.

    Args:
        model: a fitted PolicyModel (left unchanged).
        cache_dir: folder for compiled shared objects, keyed by model-text hash; None compiles
            in memory every time.
        jobs: with a `cache_dir`, compile that many boosters side by side in worker processes
            first (the copy then loads them from the cache).

    Raises:
        CompileError: lleaves is not installed or cannot compile one of the boosters.
    """
    if jobs > 1 and cache_dir is not None:
        if not lleaves_available():
            raise CompileError(
                "compiled backend: lleaves is not importable; "
                "install the extra: pip install 'winback[compiled]'"
            )
        cache_dir.mkdir(parents=True, exist_ok=True)
        _warm_cache(model, cache_dir, jobs)
    response = model.response
    if response is not None:
        response = copy.copy(response)
        bags: list[Any] = []
        for bag in model.response.models_:  # type: ignore[union-attr]
            if isinstance(bag, list | tuple):
                bags.append([compile_booster(b, cache_dir) for b in bag])
            else:
                bags.append(compile_booster(bag, cache_dir))
        response.models_ = bags
    reactivation = model.reactivation
    if reactivation is not None:
        reactivation = _with_booster(reactivation, cache_dir)
    support = model.support
    if support is not None:
        support = _with_booster(support, cache_dir)
    metadata = {**model.metadata, "scoring_backend": "lleaves"}
    return dataclasses.replace(
        model,
        response=response,
        reactivation=reactivation,
        support=support,
        metadata=metadata,
    )
