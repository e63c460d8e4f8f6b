"""Offline policy value: IPS, SNIPS and DR against a simulated log with known true value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import training.policy_value as pv
from models.errors import InvalidInputError
from training.policy_value import (
    LoggedData,
    RuleCandidate,
    best_single_option,
    choose_rule,
    deterministic_policy,
    evaluate_policies,
    policy_difference,
    random_policy,
    single_option_policy,
)

OPTIONS = ("holdout", "a", "b")


def simulate(n: int, seed: int) -> dict[str, np.ndarray]:
    """Logging favours `holdout` for x > 0.5; a is good for x > 0.5, b for the rest."""
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    mu = np.column_stack([np.full(n, 0.1), 0.1 + 0.3 * (x > 0.5), 0.1 + 0.2 * (x <= 0.5)])
    probs = np.where((x > 0.5)[:, None], [0.6, 0.2, 0.2], [0.2, 0.4, 0.4])
    a = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    r = (rng.random(n) < mu[np.arange(n), a]).astype(float)
    return {"x": x, "mu": mu, "a": a, "p": probs[np.arange(n), a], "r": r}


def logged(sim: dict[str, np.ndarray]) -> LoggedData:
    return LoggedData.from_labels(OPTIONS, np.asarray(OPTIONS)[sim["a"]], sim["p"], sim["r"])


def test_estimators_cover_the_true_value() -> None:
    sim = simulate(20000, 0)
    log = logged(sim)
    target = np.where(sim["x"] > 0.5, "a", "b")
    pi = deterministic_policy(target, OPTIONS)
    true_value = 0.5 * 0.4 + 0.5 * 0.3  # population value of the target policy
    q = sim["mu"] + 0.05  # a biased reward model: DR must still be right
    res = evaluate_policies(log, {"target": pi}, q=q, n_boot=300, seed=1)
    for est in ("ips", "snips", "dr"):
        lo, hi = (float(res.loc[("target", est), c]) for c in ("ci_low", "ci_high"))
        assert lo <= true_value <= hi, est
        assert hi - lo < 0.03


def test_ips_is_unbiased_over_replications() -> None:
    pi_fn = lambda x: deterministic_policy(np.where(x > 0.5, "a", "holdout"), OPTIONS)  # noqa: E731
    true_value = 0.5 * 0.4 + 0.5 * 0.1
    estimates = []
    for seed in range(40):
        sim = simulate(2000, 100 + seed)
        log = logged(sim)
        res = evaluate_policies(log, {"p": pi_fn(sim["x"])}, n_boot=2, seed=seed)
        estimates.append(res.loc[("p", "ips"), "estimate"])
    se = np.std(estimates, ddof=1) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - true_value) < 3 * se


def test_paired_difference_uses_the_same_resamples() -> None:
    sim = simulate(10000, 3)
    log = logged(sim)
    good = deterministic_policy(np.where(sim["x"] > 0.5, "a", "b"), OPTIONS)
    only_a = single_option_policy(log.n, OPTIONS, "a")
    diff = policy_difference(log, good, only_a, n_boot=300, seed=0)
    # True difference: 0.5 * (0.3 - 0.1) (rows x <= 0.5: b 0.3 vs a 0.1) = 0.1
    assert diff.loc["ips", "ci_low"] <= 0.1 <= diff.loc["ips", "ci_high"]
    assert diff.loc["ips", "ci_low"] > 0
    same = policy_difference(log, good, good, n_boot=50, seed=0)
    assert (same[["difference", "ci_low", "ci_high"]].to_numpy() == 0).all()
    # Same seed, same intervals.
    again = policy_difference(log, good, only_a, n_boot=300, seed=0)
    assert diff.equals(again)


def test_baselines() -> None:
    sim = simulate(20000, 4)
    log = logged(sim)
    # a: 0.5 * 0.4 + 0.5 * 0.1 = 0.25; b: 0.5 * 0.1 + 0.5 * 0.3 = 0.2; holdout 0.1
    assert best_single_option(log) == "a"
    assert best_single_option(log, candidates=["holdout", "b"]) == "b"
    rnd = random_policy(log.n, OPTIONS, allowed=["a", "b"])
    np.testing.assert_allclose(rnd[0], [0, 0.5, 0.5])
    res = evaluate_policies(log, {"random": rnd}, n_boot=200, seed=0)
    assert (
        res.loc[("random", "snips"), "ci_low"] <= 0.225 <= res.loc[("random", "snips"), "ci_high"]
    )


def test_bad_inputs_are_clear() -> None:
    with pytest.raises(InvalidInputError, match=r"labels \['zzz'\]"):
        LoggedData.from_labels(OPTIONS, ["zzz"], [0.5], [1.0])
    with pytest.raises(InvalidInputError, match="propensity"):
        LoggedData.from_labels(OPTIONS, ["a"], [0.0], [1.0])
    log = LoggedData.from_labels(OPTIONS, ["a", "b"], [0.5, 0.5], [1.0, 0.0])
    with pytest.raises(InvalidInputError, match="probability distribution"):
        evaluate_policies(log, {"bad": np.ones((2, 3))})


def _two_option_log(n: int, seed: int) -> tuple[LoggedData, np.ndarray, np.ndarray]:
    """Options a and b given at random; b beats a by 1 where x > 0 and loses 1.4 elsewhere."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    mean = np.column_stack([np.zeros(n), np.where(x > 0, 1.0, -1.4)])
    action = rng.integers(0, 2, size=n)
    reward = mean[np.arange(n), action] + rng.normal(size=n)
    return LoggedData.from_labels(["a", "b"], np.array(["a", "b"])[action], 0.5, reward), x, mean


def test_choose_rule_takes_the_informed_learner_and_a_bold_z() -> None:
    logged, _, mean = _two_option_log(8000, 0)
    rng = np.random.default_rng(1)
    informed = mean[None] + rng.normal(scale=0.2, size=(8, *mean.shape))  # knows the sign of x
    noise = rng.normal(scale=1.0, size=(8, *mean.shape))  # knows nothing
    cands = [RuleCandidate("noise", noise, "a"), RuleCandidate("informed", informed, "a")]
    name, z, table = choose_rule(cands, logged, q=np.zeros((logged.n, 2)), zs=(0.0, 1.96))
    assert name == "informed" and len(table) == 4
    assert table.attrs["reference_option"] == "a"  # a beats b on average
    chosen = table[(table.learner == name) & (table.z == z)].iloc[0]
    assert chosen.ci_low > 0.3  # the true gain is about 0.5
    # both of its rules pay and neither is significantly better: the least careful one
    assert z == 0.0 and (table[table.learner == name].ci_low > 0).all()
    assert table.attrs.get("careful_vs_bold", {"ci_low": 0.0})["ci_low"] <= 0


def test_choose_rule_takes_a_careful_z_where_it_is_significantly_better() -> None:
    logged, x, mean = _two_option_log(8000, 7)
    rng = np.random.default_rng(8)
    bags = mean[None] + rng.normal(scale=0.2, size=(8, *mean.shape))
    # near x = 0 the learner has it backwards, but its bags disagree widely there
    unsure = np.abs(x) <= 0.5
    bags[:, unsure, 1] = -mean[unsure, 1] + rng.normal(scale=3.0, size=(8, int(unsure.sum())))
    name, z, table = choose_rule(
        [RuleCandidate("learner", bags, "a")], logged, q=np.zeros((logged.n, 2)), zs=(0.0, 1.96)
    )
    assert (table.ci_low > 0).all()  # both rules beat giving everyone a ...
    assert table.attrs["careful_vs_bold"]["ci_low"] > 0  # ... the careful one more
    assert (name, z) == ("learner", 1.96)


def test_choose_rule_refuses_a_negative_z() -> None:
    logged, _, mean = _two_option_log(200, 0)
    with pytest.raises(InvalidInputError, match=r"zs: every z must be >= 0"):
        choose_rule([RuleCandidate("x", mean[None].repeat(2, 0), "a")], logged, mean, zs=(-1.0,))


def test_choose_rule_keeps_the_default_where_estimates_are_noise() -> None:
    logged, _, _ = _two_option_log(8000, 2)
    noise = np.random.default_rng(3).normal(scale=1.0, size=(8, logged.n, 2))
    _, z, table = choose_rule(
        [RuleCandidate("noise", noise, "a")], logged, q=np.zeros((logged.n, 2)), zs=(0.0, 1.96)
    )
    assert z == 1.96  # the bold rule's interval reaches below the careful one's
    bold = table[table.z == 0.0].iloc[0]
    assert bold.share_deviating > 0.3 and bold.ci_low < 0


def test_choose_rule_keeps_the_careful_z_when_no_rule_is_shown_to_pay() -> None:
    # b is worse than a for everyone; the learner's default is b (its training rows misled it)
    rng = np.random.default_rng(4)
    n = 8000
    action = rng.integers(0, 2, size=n)
    reward = np.where(action == 1, -0.4, 0.0) + rng.normal(size=n)
    logged = LoggedData.from_labels(["a", "b"], np.array(["a", "b"])[action], 0.5, reward)
    noise = rng.normal(scale=1.0, size=(8, n, 2))
    _, z, table = choose_rule(
        [RuleCandidate("misled", noise, "b")], logged, q=np.zeros((n, 2)), zs=(0.0, 1.96)
    )
    assert (table.ci_low <= 0).all()  # nothing beats giving everyone a
    # the bold rule, moving half the customers off b, has the higher lower end ...
    assert table.loc[table.ci_low.idxmax(), "z"] == 0.0
    # ... but it was not shown to pay, so the careful z is kept
    assert z == 1.96


def test_choose_rule_keeps_the_preferred_learner_unless_another_is_significantly_better() -> None:
    logged, _, mean = _two_option_log(8000, 5)
    rng = np.random.default_rng(6)
    pooled = mean[None] + rng.normal(scale=0.2, size=(8, *mean.shape))
    # the same knowledge with a little different noise: estimates differ, truth does not
    other = mean[None] + rng.normal(scale=0.2, size=(8, *mean.shape))
    for first, second in ((pooled, other), (other, pooled)):
        cands = [RuleCandidate("preferred", first, "a"), RuleCandidate("other", second, "a")]
        name, _, table = choose_rule(cands, logged, q=np.zeros((logged.n, 2)), zs=(0.0, 1.96))
        assert name == "preferred"
        assert (table.ci_low > 0).any()
    # a learner that knows nothing is never preferred over one that is significantly better
    noise = rng.normal(scale=1.0, size=(8, *mean.shape))
    cands = [RuleCandidate("noise", noise, "a"), RuleCandidate("informed", pooled, "a")]
    name, _, _ = choose_rule(cands, logged, q=np.zeros((logged.n, 2)), zs=(0.0, 1.96))
    assert name == "informed"


def test_choose_rule_keeps_the_bold_z_unless_a_careful_one_is_significantly_better() -> None:
    # b beats a by 1 where x > 0.5, loses 1.4 below -0.5 and makes no difference between,
    # where the learner's bags hover around a small gain
    rng = np.random.default_rng(10)
    n = 8000
    x = rng.normal(size=n)
    mean = np.column_stack([np.zeros(n), np.where(x > 0.5, 1.0, np.where(x > -0.5, 0.0, -1.4))])
    action = rng.integers(0, 2, size=n)
    reward = mean[np.arange(n), action] + rng.normal(size=n)
    logged = LoggedData.from_labels(["a", "b"], np.array(["a", "b"])[action], 0.5, reward)
    bags = mean[None] + rng.normal(scale=0.2, size=(8, n, 2))
    mid = np.abs(x) <= 0.5
    bags[:, mid, 1] = 0.05 + rng.normal(scale=0.5, size=(8, int(mid.sum())))
    _, z, table = choose_rule(
        [RuleCandidate("learner", bags, "a")], logged, q=np.zeros((n, 2)), zs=(0.0, 1.96)
    )
    bold, careful = table.iloc[0], table.iloc[1]
    assert bold.ci_low > 0 and careful.ci_low > 0
    # the careful rule's estimate is the higher one, by noise: the rows cannot tell them apart
    assert careful.dr_gain_vs_best_single > bold.dr_gain_vs_best_single
    assert table.attrs["careful_vs_bold"]["ci_low"] < 0
    assert z == 0.0


def test_best_single_option_by_dr_corrects_an_overrating_reward_model() -> None:
    # a is worth 1, b is worth 0.5; the reward model overrates b by 1 everywhere
    rng = np.random.default_rng(12)
    n = 4000
    action = rng.integers(0, 2, size=n)
    reward = np.where(action == 0, 1.0, 0.5) + rng.normal(scale=0.5, size=n)
    logged = LoggedData.from_labels(["a", "b"], np.array(["a", "b"])[action], 0.5, reward)
    q = np.column_stack([np.ones(n), np.full(n, 1.5)])
    assert best_single_option(logged, "dr", q=q) == "a"
    assert float(q.mean(axis=0).argmax()) == 1  # the model's mean value alone would take b
    with pytest.raises(InvalidInputError, match="q: the doubly robust estimate needs"):
        best_single_option(logged, "dr")
    with pytest.raises(InvalidInputError, match="'median' is not ips, snips or dr"):
        best_single_option(logged, "median")


def test_snips_is_undefined_without_agreeing_rows_and_its_interval_skips_such_resamples() -> None:
    # 3 of 4 rows logged "a": about a third of the resamples hold no "b" row for policy "b"
    data = LoggedData.from_labels(
        ("holdout", "a", "b"),
        np.array(["a", "a", "a", "b"]),
        np.full(4, 1 / 3),
        np.array([0.0, 1.0, 0.0, 1.0]),
    )
    only_b = single_option_policy(4, data.options, "b")
    only_holdout = single_option_policy(4, data.options, "holdout")
    values = evaluate_policies(data, {"b": only_b, "holdout": only_holdout}, n_boot=200, seed=0)
    b = values.loc[("b", "snips")]
    assert b["estimate"] == pytest.approx(1.0)
    assert np.isfinite(b["ci_low"]) and np.isfinite(b["ci_high"])
    assert b["ci_low"] <= b["estimate"] <= b["ci_high"]
    never = values.loc[("holdout", "snips")]
    assert np.isnan(never["estimate"]) and np.isnan(never["ci_low"])
    assert values.loc[("holdout", "ips"), "estimate"] == 0.0
    diff = policy_difference(data, only_b, single_option_policy(4, data.options, "a"), n_boot=200)
    assert np.isfinite(diff.loc["snips", ["ci_low", "ci_high"]].to_numpy(float)).all()
    with pytest.raises(InvalidInputError, match="candidates: no snips estimate"):
        best_single_option(data, "snips", candidates=["holdout"])


def _index_bootstrap(
    log: LoggedData, policies: dict[str, np.ndarray], q: np.ndarray, n_boot: int, seed: int
) -> dict[tuple[str, str], np.ndarray]:
    """The resampling as it was first written: each term gathered at the drawn indices,
    `rng.integers(0, n, size=(50, n))` per chunk of 50 resamples; replicates per (policy,
    estimator)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(log.n)
    out: dict[tuple[str, str], list[np.ndarray]] = {}
    for start in range(0, n_boot, 50):
        idx = rng.integers(0, log.n, size=(min(50, n_boot - start), log.n))
        for name, pi in policies.items():
            w = pi[rows, log.action] / log.propensity
            dr = (pi * q).sum(axis=1) + w * (log.reward - q[rows, log.action])
            mw, mwr = w[idx].mean(axis=-1), (w * log.reward)[idx].mean(axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                snips = np.where(mw > 0, mwr / mw, np.nan)
            for est, v in (("ips", mwr), ("snips", snips), ("dr", dr[idx].mean(axis=-1))):
                out.setdefault((name, est), []).append(v)
    return {k: np.concatenate(v) for k, v in out.items()}


def _percentiles(b: np.ndarray) -> list[float]:
    b = b[np.isfinite(b)]
    return [float(x) for x in np.quantile(b, [0.025, 0.975])]


@pytest.mark.parametrize("chunk_values", [pv.RESAMPLE_CHUNK_VALUES, 1000])
def test_counted_resamples_give_the_intervals_of_gathered_indices(
    monkeypatch: pytest.MonkeyPatch, chunk_values: int
) -> None:
    # the resamples are drawn as counts per row (one bincount serves every term); they must be
    # the very resamples the index gathering drew from the same seed, so every interval
    # matches it to rounding, whatever the chunking of the draws (1000 values: one resample
    # per chunk)
    monkeypatch.setattr(pv, "RESAMPLE_CHUNK_VALUES", chunk_values)
    sim = simulate(3001, 5)
    log = logged(sim)
    q = sim["mu"] + 0.03
    policies = {
        "target": deterministic_policy(np.where(sim["x"] > 0.5, "a", "b"), OPTIONS),
        "only_a": single_option_policy(log.n, OPTIONS, "a"),
        "random": random_policy(log.n, OPTIONS),
    }
    reference = _index_bootstrap(log, policies, q, n_boot=130, seed=11)
    values = evaluate_policies(log, policies, q=q, n_boot=130, seed=11)
    for (name, est), b in reference.items():
        got = values.loc[(name, est), ["ci_low", "ci_high"]].to_numpy(float)
        np.testing.assert_allclose(got, _percentiles(b), rtol=1e-12, err_msg=f"{name} {est}")
    diff = policy_difference(log, policies["target"], policies["only_a"], q=q, n_boot=130, seed=11)
    for est in ("ips", "snips", "dr"):
        want = _percentiles(reference[("target", est)] - reference[("only_a", est)])
        got = diff.loc[est, ["ci_low", "ci_high"]].to_numpy(float)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=est)


def test_one_bootstrap_serves_the_values_and_the_paired_difference() -> None:
    sim = simulate(2000, 6)
    log = logged(sim)
    good = deterministic_policy(np.where(sim["x"] > 0.5, "a", "b"), OPTIONS)
    only_b = single_option_policy(log.n, OPTIONS, "b")
    boot = pv.bootstrap_policies(log, {"good": good, "b": only_b}, n_boot=100, seed=3)
    alone = policy_difference(log, good, only_b, n_boot=100, seed=3)
    pd.testing.assert_frame_equal(boot.difference("good", "b"), alone)
    pd.testing.assert_frame_equal(
        boot.values(), evaluate_policies(log, {"good": good, "b": only_b}, n_boot=100, seed=3)
    )
