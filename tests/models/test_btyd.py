"""BG/NBD maximum likelihood and the BTYD prior: recovery, shape, missing data, errors."""

from __future__ import annotations

import numpy as np
import pytest

from models.btyd import BetaGeoModel, BTYDPrior, ParetoNBDModel, rfm_summary
from models.errors import InvalidInputError, NotFittedError
from training.metrics import roc_auc

TRUE = {"r": 0.5, "alpha": 20.0, "a": 1.5, "b": 4.0}


def simulate(
    n: int, seed: int, horizon: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BG/NBD customers observed for T days after their first order: (x, t_x, T) and the
    number of purchases in the `horizon` days after T."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(TRUE["r"], 1.0 / TRUE["alpha"], n)
    p = rng.beta(TRUE["a"], TRUE["b"], n)
    T = rng.uniform(100.0, 300.0, n)
    x, t_x, future = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:  # the first order is at 0; dropout may follow each repeat order
            t += rng.exponential(1.0 / lam[i])
            if t > T[i] + horizon:
                break
            if t <= T[i]:
                x[i] += 1
                t_x[i] = t
            else:
                future[i] += 1
            if rng.random() < p[i]:
                break
    return x, t_x, T, future


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return simulate(6000, 0, horizon=180.0)


@pytest.fixture(scope="module")
def model(sample: tuple[np.ndarray, ...]) -> BetaGeoModel:
    x, t_x, T, _ = sample
    return BetaGeoModel(penalizer=0.0).fit(x, t_x, T)


def test_maximum_likelihood_recovers_the_simulated_parameters(model: BetaGeoModel) -> None:
    fitted = model.params_
    assert fitted["r"] == pytest.approx(TRUE["r"], rel=0.2)
    assert fitted["alpha"] == pytest.approx(TRUE["alpha"], rel=0.3)
    # a and b are identified only through the dropout pattern: looser
    assert fitted["a"] / (fitted["a"] + fitted["b"]) == pytest.approx(0.273, abs=0.08)


def test_expected_purchases_match_the_simulated_future(
    sample: tuple[np.ndarray, ...], model: BetaGeoModel
) -> None:
    x, t_x, T, future = sample
    expected = model.expected_purchases(180.0, x, t_x, T)
    assert expected.sum() == pytest.approx(future.sum(), rel=0.1)
    assert roc_auc((future > 0).astype(int), expected) > 0.75


def test_shape_recent_and_frequent_buyers_are_more_alive(model: BetaGeoModel) -> None:
    x = np.array([3.0, 3.0, 10.0, 0.0])
    t_x = np.array([200.0, 50.0, 50.0, 0.0])
    T = np.full(4, 250.0)
    alive = model.p_alive(x, t_x, T)
    assert alive[0] > alive[1]  # same history, more recent last order
    assert alive[1] > alive[2]  # same last order, but the frequent buyer's silence says more
    assert alive[3] == 1.0  # no repeat: BG/NBD cannot have seen a dropout
    e = model.expected_purchases(90.0, x, t_x, T)
    assert e[0] > e[1]
    assert np.all(model.expected_purchases(180.0, x, t_x, T) > e)


def test_missing_history_gives_nan_and_fit_ignores_it() -> None:
    x, t_x, T = rfm_summary([np.nan, 0, 1, 3], [np.nan, np.nan, 40.0, 100.0], [np.nan, 5, 40, 10])
    assert np.isnan(x[:2]).all() and np.isnan(t_x[:2]).all() and np.isnan(T[:2]).all()
    assert (x[2], t_x[2], T[2]) == (0.0, 0.0, 40.0)  # one order: no recency information
    assert (x[3], t_x[3], T[3]) == (2.0, 90.0, 100.0)
    xs, ts, Ts, _ = simulate(500, 1)
    m = BetaGeoModel().fit(np.r_[xs, np.nan], np.r_[ts, np.nan], np.r_[Ts, np.nan])
    assert m.n_customers_ == 500
    assert np.isnan(m.p_alive(x, t_x, T)[:2]).all()


def test_errors_name_the_problem() -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        BetaGeoModel().p_alive([1.0], [1.0], [2.0])
    with pytest.raises(NotFittedError, match="BTYDPrior is not fitted"):
        BTYDPrior().transform(np.ones((1, 3)))
    with pytest.raises(InvalidInputError, match="t_x <= T"):
        BetaGeoModel().fit([1.0, 2.0], [5.0, 1.0], [3.0, 4.0])
    with pytest.raises(InvalidInputError, match="differ in length"):
        BetaGeoModel().fit([1.0], [1.0, 2.0], [3.0])
    with pytest.raises(InvalidInputError, match=r"\['days_since_first_order'\]"):
        BTYDPrior().fit(np.zeros((3, 2)), [0, 1, 0], ["orders_lifetime", "days_since_last_order"])


PARETO = {"r": 0.6, "alpha": 40.0, "s": 0.8, "beta": 200.0}


def simulate_pareto(
    n: int, seed: int, horizon: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pareto/NBD customers: Poisson purchases until an exponential lifetime ends."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(PARETO["r"], 1.0 / PARETO["alpha"], n)
    life = rng.exponential(1.0 / rng.gamma(PARETO["s"], 1.0 / PARETO["beta"], n))
    T = rng.uniform(100.0, 300.0, n)
    x, t_x, future = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        t = rng.exponential(1.0 / lam[i])
        while t <= min(life[i], T[i] + horizon):
            if t <= T[i]:
                x[i] += 1
                t_x[i] = t
            else:
                future[i] += 1
            t += rng.exponential(1.0 / lam[i])
    return x, t_x, T, future


def test_pareto_nbd_recovers_parameters_and_predicts_the_future() -> None:
    x, t_x, T, future = simulate_pareto(6000, 4, horizon=180.0)
    model = ParetoNBDModel(penalizer=0.0).fit(x, t_x, T)
    assert model.params_["r"] == pytest.approx(PARETO["r"], rel=0.2)
    assert model.params_["alpha"] == pytest.approx(PARETO["alpha"], rel=0.3)
    expected = model.expected_purchases(180.0, x, t_x, T)
    assert expected.sum() == pytest.approx(future.sum(), rel=0.1)
    assert roc_auc((future > 0).astype(int), expected) > 0.75
    # unlike BG/NBD, a one-time buyer's P(alive) falls with age, and recency still counts
    alive = model.p_alive(
        [0.0, 0.0, 3.0, 3.0], [0.0, 0.0, 200.0, 50.0], [50.0, 250.0, 250.0, 250.0]
    )
    assert alive[0] > alive[1] and alive[2] > alive[3]
    assert np.all((alive > 0) & (alive < 1))


def history_matrix(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """orders, days since first and last order, average order value; about 10% never ordered."""
    rng = np.random.default_rng(seed)
    x, t_x, T, future = simulate(n, seed, horizon=60.0)
    aov = rng.gamma(2.0, 20.0, n)
    X = np.column_stack([x + 1, T, T - t_x, aov])
    X[rng.random(n) < 0.1] = np.nan
    return (
        X,
        (future > 0).astype(int),
        [
            "orders_lifetime",
            "days_since_first_order",
            "days_since_last_order",
            "aov_lifetime",
        ],
    )


def test_prior_ranks_customers_and_handles_rows_without_orders() -> None:
    X, y, cols = history_matrix(3000, 2)
    prior = BTYDPrior(horizon_days=60).fit(X, y, cols)
    X_test, y_test, _ = history_matrix(2000, 3)
    z = prior.decision_function(X_test)
    assert np.isfinite(z).all()
    assert roc_auc(y_test, z) > 0.75
    # transform gives the logistic regression's design: its inputs and the no-order flag
    Z = prior.transform(X_test)
    assert Z.shape == (len(X_test), len(prior.coef_))
    np.testing.assert_allclose(Z @ prior.coef_ + prior.intercept_, z)
    assert (Z[:, -1] == np.isnan(X_test[:, 0])).all()
    # a more recent last order raises the prior (the logistic weights are not constrained, so
    # this is a property of the fit, checked on most rows)
    recent = X_test.copy()
    recent[:, 2] = recent[:, 2] / 2
    with_order = ~np.isnan(X_test[:, 0])
    gain = (prior.decision_function(recent) - z)[with_order]
    assert gain.mean() > 0
    assert (gain >= -1e-9).mean() > 0.95
    # column order is the fit's: a matrix without the monetary column needs its own prior
    no_money = BTYDPrior().fit(X[:, :3], y, cols[:3])
    assert no_money.columns_[3] == -1 and no_money.coef_.shape == (6,)
    # the BG/NBD variant ranks as well on this (BG/NBD) data
    bg = BTYDPrior(model="bgnbd", horizon_days=60).fit(X, y, cols)
    assert roc_auc(y_test, bg.decision_function(X_test)) > 0.75
    with pytest.raises(InvalidInputError, match="model 'bogus'"):
        BTYDPrior(model="bogus").fit(X, y, cols)  # type: ignore[arg-type]


def test_prior_fits_its_btyd_parameters_on_a_seeded_subsample() -> None:
    X, y, cols = history_matrix(3000, 2)
    full = BTYDPrior(horizon_days=60).fit(X, y, cols)
    sub = BTYDPrior(horizon_days=60, max_fit_rows=1500, random_state=4).fit(X, y, cols)
    again = BTYDPrior(horizon_days=60, max_fit_rows=1500, random_state=4).fit(X, y, cols)
    assert sub.btyd_.params_ == again.btyd_.params_  # the draw is seeded
    assert sub.btyd_.params_ != full.btyd_.params_  # and really is a subsample
    for k, v in full.btyd_.params_.items():  # half the rows estimate the same process
        assert sub.btyd_.params_[k] == pytest.approx(v, rel=0.5)
    X_test, y_test, _ = history_matrix(2000, 3)
    assert roc_auc(y_test, sub.decision_function(X_test)) > 0.75
