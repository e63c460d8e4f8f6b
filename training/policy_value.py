"""Offline value of a decision policy from logged (randomized or not) data, pure numpy.

Logged data: for row i, the option a_i that was given, its logging propensity p_i, and the
reward r_i (conversion, spend, margin). A policy is an (n, k) matrix pi[i, o] of the
probability it gives option o to row i (one-hot for a deterministic policy).

Estimators of V(pi) = E[sum_o pi(o | x) r(o)]:
- IPS:   mean_i  w_i r_i,                 w_i = pi[i, a_i] / p_i
- SNIPS: sum_i w_i r_i / sum_i w_i
- DR:    mean_i  [ sum_o pi[i, o] q[i, o] + w_i (r_i - q[i, a_i]) ]   (q: a reward model)

Confidence intervals are percentile bootstraps over rows with a seeded generator; paired
differences between two policies use the same resamples for both, so the shared noise cancels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.errors import InvalidInputError

ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class LoggedData:
    """Logged decisions: option index per row, its propensity, the reward."""

    options: tuple[str, ...]
    action: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray

    @classmethod
    def from_labels(
        cls, options: Sequence[str], action: Any, propensity: Any, reward: Any
    ) -> LoggedData:
        opts = tuple(str(o) for o in options)
        labels = np.asarray(action).astype(str).ravel()
        index = {o: i for i, o in enumerate(opts)}
        unknown = sorted(set(labels.tolist()) - set(opts))
        if unknown:
            raise InvalidInputError(f"action: labels {unknown} are not among options {opts}")
        a = np.array([index[v] for v in labels], dtype=int)
        p = np.broadcast_to(np.asarray(propensity, dtype=float), a.shape).copy()
        r = np.asarray(reward, dtype=float).ravel()
        if r.shape != a.shape:
            raise InvalidInputError(f"reward: has {r.shape[0]} values for {a.shape[0]} actions")
        if not np.all((p > 0) & (p <= 1)):
            raise InvalidInputError("propensity: every value must be in (0, 1]")
        return cls(opts, a, p, r)

    @property
    def n(self) -> int:
        return int(self.action.shape[0])


def deterministic_policy(choice: Any, options: Sequence[str]) -> np.ndarray:
    """One-hot (n, k) matrix from one option label per row."""
    labels = np.asarray(choice).astype(str).ravel()
    opts = [str(o) for o in options]
    unknown = sorted(set(labels.tolist()) - set(opts))
    if unknown:
        raise InvalidInputError(f"policy: options {unknown} are not among {opts}")
    pi = np.zeros((labels.shape[0], len(opts)))
    pi[np.arange(labels.shape[0]), [opts.index(v) for v in labels]] = 1.0
    return pi


def single_option_policy(n: int, options: Sequence[str], option: str) -> np.ndarray:
    """Everyone gets `option` (e.g. `none` for "no incentive", or the best single offer)."""
    return deterministic_policy([option] * n, options)


def random_policy(
    n: int, options: Sequence[str], allowed: Sequence[str] | None = None
) -> np.ndarray:
    """Uniform over `allowed` (default: every option), as a stochastic policy."""
    opts = [str(o) for o in options]
    use = opts if allowed is None else [str(o) for o in allowed]
    pi = np.zeros((n, len(opts)))
    for o in use:
        pi[:, opts.index(o)] = 1.0 / len(use)
    return pi


def _check_policy(logged: LoggedData, pi: np.ndarray) -> np.ndarray:
    pi = np.asarray(pi, dtype=float)
    if pi.shape != (logged.n, len(logged.options)):
        raise InvalidInputError(f"policy: shape {pi.shape} != {(logged.n, len(logged.options))}")
    if not np.allclose(pi.sum(axis=1), 1.0) or np.any(pi < 0):
        raise InvalidInputError("policy: each row must be a probability distribution")
    return pi


def _terms(logged: LoggedData, pi: np.ndarray, q: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per-row terms: estimator value = mean(num) / mean(den)."""
    rows = np.arange(logged.n)
    w = pi[rows, logged.action] / logged.propensity
    out = {"w": w, "wr": w * logged.reward}
    if q is not None:
        out["dr"] = (pi * q).sum(axis=1) + w * (logged.reward - q[rows, logged.action])
    return out


def _estimates(means: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Estimator values from the means of the per-row terms (scalars for the point estimate,
    arrays of one mean per bootstrap resample for the replicates)."""
    w = np.asarray(means["w"])
    with np.errstate(invalid="ignore", divide="ignore"):
        # SNIPS is undefined (NaN) where the policy agrees with no logged action: no weight
        snips = np.where(w > 0, np.asarray(means["wr"]) / w, np.nan)
    est = {"ips": np.asarray(means["wr"]), "snips": snips}
    if "dr" in means:
        est["dr"] = np.asarray(means["dr"])
    return est


def _point(terms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return _estimates({k: np.asarray(v.mean()) for k, v in terms.items()})


def point_estimates(logged: LoggedData, policy: np.ndarray, q: Any = None) -> dict[str, float]:
    """The IPS and SNIPS (and, with `q`, DR) estimates of one policy's value, no intervals."""
    terms = _terms(logged, _check_policy(logged, policy), _check_q(logged, q))
    return {k: float(v) for k, v in _point(terms).items()}


def subset(logged: LoggedData, rows: np.ndarray) -> LoggedData:
    """The logged decisions of `rows` (a boolean mask or indices)."""
    return LoggedData(
        logged.options, logged.action[rows], logged.propensity[rows], logged.reward[rows]
    )


def _check_q(logged: LoggedData, q: Any) -> np.ndarray | None:
    if q is None:
        return None
    arr = np.asarray(q, dtype=float)
    if arr.shape != (logged.n, len(logged.options)):
        raise InvalidInputError(f"q: shape {arr.shape} != {(logged.n, len(logged.options))}")
    return arr


def _interval(b: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentile interval over the resamples where the estimate is defined (SNIPS is not
    where a resample holds no row the policy agrees with); NaN when it never is."""
    b = b[np.isfinite(b)]
    if b.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(b, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


RESAMPLE_CHUNK_VALUES = 1 << 23
"""Counts held in memory at once while resampling (8M float64 values, 64 MiB)."""


def _resample_counts(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap resamples of n rows as counts: (size, n) blocks, how often each row was
    drawn in each resample, `n_boot` rows in all.

    Resample b draws n row indices uniformly with replacement from `seed`'s generator, one
    resample after the other: the indices `rng.integers(0, n, size=(n_boot, n))` would hold
    (the generator buffers its 32-bit draws across calls, so the stream does not depend on how
    the draws are split). A resample's mean of a per-row term x is then counts @ x / n, the
    mean of x over the drawn indices, without gathering x at n random places per term: one
    draw and one `bincount` per resample serve every term of every policy.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, RESAMPLE_CHUNK_VALUES // max(n, 1)))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        counts = np.empty((size, n))
        for j in range(size):
            counts[j] = np.bincount(rng.integers(0, n, size=n), minlength=n)
        yield counts


def _resampled_means(
    columns: Mapping[tuple[str, str], np.ndarray], n: int, n_boot: int, seed: int
) -> dict[tuple[str, str], np.ndarray]:
    """Per column (n values), its mean on each of the `n_boot` resamples of `seed`.

    Columns with equal values share one product, so equal terms (a policy compared with
    itself, or two policies that agree) get bit-identical replicates and their paired
    differences are exactly zero.
    """
    slot: dict[bytes, int] = {}
    distinct: list[np.ndarray] = []
    where: dict[tuple[str, str], int] = {}
    for key, values in columns.items():
        v = np.ascontiguousarray(values, dtype=float)
        digest = hashlib.blake2b(v.tobytes(), digest_size=16).digest()
        if digest not in slot:
            slot[digest] = len(distinct)
            distinct.append(v)
        where[key] = slot[digest]
    matrix = np.column_stack(distinct) if distinct else np.empty((n, 0))
    parts = [counts @ matrix / n for counts in _resample_counts(n, n_boot, seed)]
    means = np.concatenate(parts) if parts else np.empty((0, len(distinct)))
    return {key: means[:, j] for key, j in where.items()}


@dataclass(frozen=True)
class PolicyBootstrap:
    """Several policies' estimates and their bootstrap replicates, all on the same resamples.

    estimates: policy -> estimator -> value on the logged rows.
    replicates: policy -> estimator -> (n_boot,) values, one per resample (NaN where SNIPS is
        undefined).
    """

    estimates: dict[str, dict[str, float]]
    replicates: dict[str, dict[str, np.ndarray]]
    alpha: float

    def values(self) -> pd.DataFrame:
        """One row per (policy, estimator): estimate, ci_low, ci_high (percentile intervals)."""
        rows = []
        for name, ests in self.estimates.items():
            for est, value in ests.items():
                lo, hi = _interval(self.replicates[name][est], self.alpha)
                rows.append(
                    {
                        "policy": name,
                        "estimator": est,
                        "estimate": value,
                        "ci_low": lo,
                        "ci_high": hi,
                    }
                )
        return pd.DataFrame(rows).set_index(["policy", "estimator"])

    def difference(self, policy: str, reference: str) -> pd.DataFrame:
        """V(policy) - V(reference) per estimator, with the paired interval: the difference on
        each resample, so the noise the two policies share cancels."""
        rows = []
        for est, value in self.estimates[policy].items():
            lo, hi = _interval(
                self.replicates[policy][est] - self.replicates[reference][est], self.alpha
            )
            rows.append(
                {
                    "estimator": est,
                    "difference": value - self.estimates[reference][est],
                    "ci_low": lo,
                    "ci_high": hi,
                }
            )
        return pd.DataFrame(rows).set_index("estimator")


def bootstrap_policies(
    logged: LoggedData,
    policies: Mapping[str, np.ndarray],
    q: Any = None,
    n_boot: int = 500,
    seed: int = 0,
    alpha: float = 0.05,
) -> PolicyBootstrap:
    """Every policy's IPS, SNIPS (and, with a reward model `q` (n, k), DR) estimate, and its
    value on `n_boot` resamples of the rows drawn from `seed` (the same for every policy).

    `evaluate_policies` and `policy_difference` are views of this: computing it once serves
    both tables on the same resamples, at the cost of one resampling.
    """
    q_arr = _check_q(logged, q)
    terms = {
        name: _terms(logged, _check_policy(logged, pi), q_arr) for name, pi in policies.items()
    }
    columns = {(name, k): v for name, t in terms.items() for k, v in t.items()}
    means = _resampled_means(columns, logged.n, n_boot, seed)
    estimates: dict[str, dict[str, float]] = {}
    replicates: dict[str, dict[str, np.ndarray]] = {}
    for name, t in terms.items():
        estimates[name] = {k: float(v) for k, v in _point(t).items()}
        replicates[name] = _estimates({k: means[(name, k)] for k in t})
    return PolicyBootstrap(estimates, replicates, alpha)


def evaluate_policies(
    logged: LoggedData,
    policies: Mapping[str, np.ndarray],
    q: Any = None,
    n_boot: int = 500,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Value of each policy by IPS, SNIPS (and DR when a reward model `q` (n, k) is given).

    Returns one row per (policy, estimator): estimate, ci_low, ci_high (percentile bootstrap,
    `n_boot` resamples from `seed`, the same resamples for every policy). SNIPS is NaN where
    the policy agrees with no logged action; its interval is over the resamples where it is
    defined.
    """
    return bootstrap_policies(logged, policies, q, n_boot, seed, alpha).values()


def policy_difference(
    logged: LoggedData,
    policy: np.ndarray,
    reference: np.ndarray,
    q: Any = None,
    n_boot: int = 500,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """V(policy) - V(reference) per estimator, with paired bootstrap CIs (same resamples)."""
    both = {"policy": policy, "reference": reference}
    return bootstrap_policies(logged, both, q, n_boot, seed, alpha).difference(
        "policy", "reference"
    )


def best_single_option(
    logged: LoggedData,
    estimator: str = "snips",
    candidates: Sequence[str] | None = None,
    q: Any = None,
) -> str:
    """The option whose give-it-to-everyone policy has the highest estimated value.

    `estimator` is "ips", "snips" or "dr" (doubly robust, with the reward model `q`, an
    (n, k) matrix of expected rewards per row and option, required).
    """
    if estimator not in ("ips", "snips", "dr"):
        raise InvalidInputError(f"estimator: '{estimator}' is not ips, snips or dr")
    q_arr = _check_q(logged, q)
    if estimator == "dr" and q_arr is None:
        raise InvalidInputError("q: the doubly robust estimate needs a reward model")
    best, best_v = "", -np.inf
    for o in candidates or logged.options:
        pi = single_option_policy(logged.n, logged.options, o)
        v = float(_point(_terms(logged, pi, q_arr))[estimator])
        if v > best_v:
            best, best_v = o, v
    if not best:
        raise InvalidInputError(
            f"candidates: no {estimator} estimate for any of them (none was logged)"
        )
    return best


@dataclass(frozen=True)
class RuleCandidate:
    """One learner's view of the validation rows, for `choose_rule`.

    bags: (n_bags, n, k) per-bag estimated value of each option (options as the logged data's).
    default: the option the learner keeps a customer on unless confident of better.
    allowed: optional (n, k) mask of options with support (see `models.policy.confident_choice`).
    """

    name: str
    bags: np.ndarray
    default: str
    allowed: np.ndarray | None = None


def choose_rule(
    candidates: Sequence[RuleCandidate],
    logged: LoggedData,
    q: np.ndarray,
    zs: Sequence[float],
    n_boot: int = 200,
    seed: int = 0,
) -> tuple[str, float, pd.DataFrame]:
    """The (learner, z) rule to decide with, judged on logged validation rows.

    Every candidate's policy at every z (`models.policy.confident_choice`) is compared with
    the best single option on these rows (by DR), as a paired DR difference with a bootstrap
    95% interval. A rule is *significant* when that interval lies above zero. Then:

    1. No significant rule: the most careful z (the largest) is kept, with the learner whose
       rule has the highest lower end there (ties: the earlier candidate). The rows must show
       that deviating from the best single option pays before a bold rule is used. (On the
       20k-customer demo world every interval was about +-0.9 wide: the highest lower end
       overall then belonged to a bold rule.)
    2. The learner: each is judged by its best significant rule (highest estimate). The first
       candidate is the preferred learner (training passes the S-learner, one model pooled
       over all options); another learner replaces it only if its best rule beats the
       preferred learner's best significantly (a paired DR difference whose interval lies
       above zero; `table.attrs["challenger_vs_preferred"]`).
    3. Its z: the least careful of its significant rules, unless its best-estimated rule is
       significantly better than that one (paired; `table.attrs["careful_vs_bold"]`). z > 0
       hedges against the model's errors; once the rows show the model's decisions pay, the
       hedge must earn its place too.

    Why not simply the highest estimate: the validation rows cannot separate the bold rules.
    On a 200k synthetic world (seed 8; the generator of the time) their estimates differed by
    less than their noise and ranked S at z = 1 first (84.6% of the oracle's true value) over
    S at z = 0 (86.5%). On three 200k worlds (seeds 7, 8, 9) the S-learner fitted on every
    training contact was best at z = 0 (86.5%, 84.9%, 86.9%; at z = 0.5 84.5%, 84.5%,
    85.8%). Choosing by the highest lower end alone was worse still: careful rules have narrow
    intervals, and on world seed 8 that took the T-learner at z = 1.96 (67.9%).

    Returns the learner name, z, and the table of every rule's estimate and interval.
    """
    from models.policy import confident_choice

    if not candidates or not zs:
        raise InvalidInputError("choose_rule: need at least one candidate and one z")
    if any(not z >= 0 for z in zs):
        raise InvalidInputError(f"zs: every z must be >= 0 (a lower bound's width), got {list(zs)}")
    q_arr = _check_q(logged, q)
    assert q_arr is not None
    reference_option = best_single_option(logged, "dr", q=q_arr)
    reference = single_option_policy(logged.n, logged.options, reference_option)
    rows: list[dict[str, Any]] = []
    keys: list[tuple[float, float, int]] = []
    gains: list[tuple[float, float, int]] = []
    policies: list[np.ndarray] = []
    for cand in candidates:
        for z in zs:
            choice = confident_choice(cand.bags, logged.options, cand.default, z, cand.allowed)
            pi = deterministic_policy(choice, logged.options)
            policies.append(pi)
            diff = policy_difference(logged, pi, reference, q=q_arr, n_boot=n_boot, seed=seed)
            dr = diff.to_dict(orient="index")["dr"]
            low = float(dr["ci_low"])
            keys.append((-low, -float(z), len(rows)))
            gains.append((-float(dr["difference"]), -float(z), len(rows)))
            rows.append(
                {
                    "learner": cand.name,
                    "z": float(z),
                    "dr_gain_vs_best_single": float(dr["difference"]),
                    "ci_low": low,
                    "ci_high": float(dr["ci_high"]),
                    "share_deviating": float(np.mean(choice.to_numpy() != reference_option)),
                }
            )
    table = pd.DataFrame(rows)
    table.attrs["reference_option"] = reference_option

    def paired(better: int, than: int) -> dict[str, float]:
        vs = policy_difference(
            logged, policies[better], policies[than], q=q_arr, n_boot=n_boot, seed=seed
        ).to_dict(orient="index")["dr"]
        return {k: float(vs[k]) for k in ("difference", "ci_low", "ci_high")}

    significant = [g for g in gains if rows[g[2]]["ci_low"] > 0]
    if not significant:
        careful = max(float(z) for z in zs)
        best = rows[min(k for k in keys if rows[k[2]]["z"] == careful)[2]]
        return str(best["learner"]), float(best["z"]), table
    # the learner: each judged by its best significant rule, the preferred one kept unless
    # another's best is significantly better than its best
    top = min(significant)[2]
    preferred = [g for g in significant if rows[g[2]]["learner"] == candidates[0].name]
    learner = str(rows[top]["learner"])
    if learner != candidates[0].name and preferred:
        vs = paired(top, min(preferred)[2])
        table.attrs["challenger_vs_preferred"] = vs
        if vs["ci_low"] <= 0:
            learner = candidates[0].name
    # then its z: the least careful of its significant rules, unless the best of them is
    # significantly better than that one
    own = [g for g in significant if rows[g[2]]["learner"] == learner]
    bold = min(own, key=lambda g: (rows[g[2]]["z"], g[2]))[2]
    chosen = min(own)[2]
    if chosen != bold:
        vs = paired(chosen, bold)
        table.attrs["careful_vs_bold"] = vs
        if vs["ci_low"] <= 0:
            chosen = bold
    best = rows[chosen]
    return str(best["learner"]), float(best["z"]), table
