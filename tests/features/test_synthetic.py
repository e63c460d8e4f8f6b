"""The synthetic world: valid, deterministic, realistic, and a world where decisions matter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from features import constants as c
from features.datadir import validate_data_dir
from features.errors import FeaturesError
from features.synthetic import (
    CustomerState,
    SyntheticWorld,
    TrueResponseModel,
    generate_world,
    write_world,
)
from features.synthetic.campaigns import OfferArrays, assign_options
from features.synthetic.catalog import default_catalog
from features.synthetic.ids import fixed_width_ids

N = 3000


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return generate_world(N, seed=11)


def _incremental_margin(world: SyntheticWorld) -> np.ndarray:
    """True incremental margin per contact and option, from the ground truth file's columns."""
    gt = world.ground_truth
    p = gt[[f"p_{o}" for o in world.model.option_ids]].to_numpy()
    rev = gt["revenue_if_convert"].to_numpy()
    margin = gt["margin_if_convert"].to_numpy()[:, None]
    costs = [o.cost.revenue_fraction * rev + o.cost.fixed for o in world.catalog.offers]
    cost = np.stack([*costs, np.zeros_like(rev), np.zeros_like(rev)], axis=1)
    out: np.ndarray = p * (margin - cost) - p[:, -1:] * margin
    return out


def test_written_world_is_a_valid_data_dir(world: SyntheticWorld, tmp_path: Path) -> None:
    write_world(world, tmp_path)
    report, data = validate_data_dir(tmp_path)
    assert report.problems == []
    assert data is not None
    assert report.row_counts[c.CUSTOMERS] == N
    truth = pd.read_parquet(tmp_path / c.GROUND_TRUTH_FILE)
    assert len(truth) == len(data.contacts) > 0
    assert truth[c.CONTACT_ID].tolist() == data.contacts[c.CONTACT_ID].tolist()
    expected = {f"p_{o}" for o in (*world.catalog.offer_ids, c.NO_INCENTIVE, c.HOLDOUT)}
    assert expected | {"revenue_if_convert", "margin_if_convert"} <= set(truth.columns)


def test_csv_format_is_valid_and_replaces_parquet(world: SyntheticWorld, tmp_path: Path) -> None:
    write_world(world, tmp_path, "parquet")
    write_world(world, tmp_path, "csv")
    report, _ = validate_data_dir(tmp_path)
    assert report.problems == []
    assert not (tmp_path / "orders.parquet").exists()


def test_same_seed_same_files_and_other_seed_differs(tmp_path: Path) -> None:
    a = write_world(generate_world(800, seed=5), tmp_path / "a")
    b = write_world(generate_world(800, seed=5), tmp_path / "b")
    other = generate_world(800, seed=6)
    for name in (*c.TABLES, "ground_truth"):
        assert (a / f"{name}.parquet").read_bytes() == (b / f"{name}.parquet").read_bytes(), name
    first = pd.read_parquet(a / "orders.parquet")
    assert not first[c.REVENUE].equals(other.tables[c.ORDERS][c.REVENUE])


def test_marginal_statistics_are_realistic(world: SyntheticWorld) -> None:
    t = world.tables
    per_customer = t[c.ORDERS].groupby(c.CUSTOMER_ID).size()
    assert 15 <= per_customer.mean() <= 25
    assert per_customer.std() > 5  # heterogeneous purchase rates
    last = t[c.ORDERS].groupby(c.CUSTOMER_ID)[c.ORDER_TS].max()
    lapsed = (pd.Timestamp(world.config.end) - last).dt.days > 180
    assert 0.2 <= lapsed.mean() <= 0.6
    consent = t[c.CONSENT].sort_values(c.UPDATED_TS)
    status = consent.groupby([c.CUSTOMER_ID, c.CHANNEL])[c.STATUS].last().unstack()
    assert 0.1 <= (status["email"] == c.OPTED_OUT).mean() <= 0.4
    margin_rate = (
        t[c.ORDERS].groupby(c.CATEGORY)[c.MARGIN].sum()
        / t[c.ORDERS].groupby(c.CATEGORY)[c.REVENUE].sum()
    )
    assert len(margin_rate) >= 6 and margin_rate.max() - margin_rate.min() > 0.2
    assert (t[c.ORDERS][c.DISCOUNT_AMOUNT] > 0).mean() > 0.1


def test_friction_raises_lapsing(world: SyntheticWorld) -> None:
    t = world.tables
    issues = t[c.EVENTS].query("type == 'delivery_issue'")[c.CUSTOMER_ID].unique()
    last = t[c.ORDERS].groupby(c.CUSTOMER_ID)[c.ORDER_TS].max()
    orders = t[c.ORDERS].groupby(c.CUSTOMER_ID).size()
    lapsed = (pd.Timestamp(world.config.end) - last).dt.days > 180
    frame = pd.DataFrame({"lapsed": lapsed, "n": orders, "issue": orders.index.isin(issues)})
    frame = frame[frame["n"].between(5, 30)]  # compare customers with similar exposure
    by_issue = frame.groupby("issue")["lapsed"].mean()
    assert by_issue[True] > by_issue[False] + 0.05


def test_campaign_log_is_randomized_and_well_formed(world: SyntheticWorld) -> None:
    contacts = world.tables[c.CONTACTS]
    assert set(contacts[c.OFFER_ID]) == {*world.catalog.offer_ids, c.NO_INCENTIVE, c.HOLDOUT}
    assert contacts[c.CAMPAIGN_ID].nunique() >= 4
    p = contacts[c.PROPENSITY]
    assert ((p > 0) & (p <= 1)).all() and p.nunique() > 5
    holdout = contacts[c.OFFER_ID] == c.HOLDOUT
    assert contacts.loc[holdout, c.CHANNEL].isna().all()
    assert contacts.loc[~holdout, c.CHANNEL].notna().all()
    assert contacts[c.STAGE].min() == 1 and contacts[c.STAGE].max() >= 3
    for offer_id in world.catalog.offer_ids:  # channels obey the catalog
        used = set(contacts.loc[contacts[c.OFFER_ID] == offer_id, c.CHANNEL])
        assert used <= set(world.catalog.get(offer_id).channels)
    linked = world.tables[c.EVENTS][c.CONTACT_ID].notna()
    assert linked.any() and (~linked).any()


def test_contacts_only_use_consented_channels(world: SyntheticWorld) -> None:
    contacts = world.tables[c.CONTACTS].dropna(subset=[c.CHANNEL])
    consent = world.tables[c.CONSENT].sort_values(c.UPDATED_TS)
    merged = pd.merge_asof(
        contacts.sort_values(c.TS),
        consent.rename(columns={c.UPDATED_TS: c.TS}),
        on=c.TS,
        by=[c.CUSTOMER_ID, c.CHANNEL],
        allow_exact_matches=False,
    )
    assert (merged[c.STATUS] == c.OPTED_IN).all()


def test_conversions_are_real_orders_matching_the_truth(world: SyntheticWorld) -> None:
    contacts = world.tables[c.CONTACTS]
    orders = world.tables[c.ORDERS]
    pairs = contacts.merge(orders, on=c.CUSTOMER_ID)
    window = pd.Timedelta(days=world.config.attribution_days)
    hit = pairs[(pairs[c.ORDER_TS] > pairs[c.TS]) & (pairs[c.ORDER_TS] <= pairs[c.TS] + window)]
    converted = contacts[c.CONTACT_ID].isin(hit[c.CONTACT_ID])
    options = pd.Index(world.model.option_ids)
    p = world.ground_truth[[f"p_{o}" for o in options]].to_numpy()
    p_assigned = p[np.arange(len(contacts)), options.get_indexer(contacts[c.OFFER_ID])]
    assert 0.03 <= converted.mean() <= 0.35
    assert abs(converted.mean() - p_assigned.mean()) < 0.03
    # discount offers are redeemed on the conversion order (others convert at full price)
    has_discount = (hit[c.DISCOUNT_AMOUNT] > 0).groupby(hit[c.OFFER_ID]).mean()
    assert has_discount[["pct10", "pct20"]].min() > 0.6
    assert has_discount[c.HOLDOUT] < 0.4


def test_discount_codes_are_used_by_those_who_would_have_ordered_anyway(
    world: SyntheticWorld,
) -> None:
    # the truth charges a discount's cost on every conversion, so every converting contact's
    # first order of the window carries it, whether the offer caused the order or not
    contacts = world.tables[c.CONTACTS]
    orders = world.tables[c.ORDERS]
    pairs = contacts.merge(orders, on=c.CUSTOMER_ID)
    window = pd.Timedelta(days=world.config.attribution_days)
    inside = (pairs[c.ORDER_TS] >= pairs[c.TS]) & (pairs[c.ORDER_TS] < pairs[c.TS] + window)
    first = pairs[inside].sort_values(c.ORDER_TS).groupby(c.CONTACT_ID).head(1)
    percent = {o.offer_id: o.value for o in world.catalog.offers if o.type == "percent_discount"}
    assert set(percent) >= {"pct10", "pct20"}
    for offer, pct in percent.items():
        rows = first[first[c.OFFER_ID] == offer]
        assert len(rows) > 20
        gross = rows[c.REVENUE] + rows[c.DISCOUNT_AMOUNT]
        expected = np.round(gross * pct / 100, 2)
        np.testing.assert_allclose(rows[c.DISCOUNT_AMOUNT], expected, atol=0.011)


def test_decisions_matter_in_the_ground_truth(world: SyntheticWorld) -> None:
    inc = _incremental_margin(world)
    options = world.model.option_ids
    best = pd.Series(np.asarray(options)[inc.argmax(axis=1)]).value_counts(normalize=True)
    assert (best >= 0.05).sum() >= 3  # no single option is best for everyone
    incentives = [j for j, o in enumerate(world.catalog.offers) if o.is_incentive]
    no_incentive = np.maximum(inc[:, options.index(c.NO_INCENTIVE)], 0.0)  # none, or holdout
    assert (no_incentive > inc[:, incentives].max(axis=1)).mean() >= 0.15
    # a naive policy (the deepest discount for everyone) loses money on average
    assert inc[:, options.index("pct20")].mean() < 0


def test_true_response_model_behaves(world: SyntheticWorld) -> None:
    gt = world.ground_truth
    p = gt[[f"p_{o}" for o in world.model.option_ids]].to_numpy()
    assert ((p > 0) & (p < 1)).all()
    contacts = world.tables[c.CONTACTS]
    by_stage = pd.Series(gt["p_none"].to_numpy()).groupby(contacts[c.STAGE].clip(upper=3)).mean()
    assert by_stage[1] > by_stage[3]  # repeated contact lowers response


def test_ids_are_fixed_width_strings() -> None:
    ids = fixed_width_ids("c", np.array([0, 7, 123456]), 6)
    assert ids.to_pylist() == ["c000000", "c000007", "c123456"]


def test_bad_size_is_a_clear_error() -> None:
    with pytest.raises(FeaturesError, match="customers"):
        generate_world(0, seed=1)


def test_cli_generate_writes_a_valid_world(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app, ["generate", "--customers", "500", "--seed", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "orders per customer" in result.output
    assert validate_data_dir(out)[0].ok


def test_logged_propensities_are_the_assignment_probabilities() -> None:
    arrays = OfferArrays.from_catalog(default_catalog())
    n = 40_000
    tier = np.repeat(np.array([0, 2], dtype=np.int8), n // 2)
    consented = np.zeros((n, len(c.CHANNELS)), bool)
    consented[:, c.CHANNELS.index("email")] = True
    choice, propensity, channel = assign_options(np.random.default_rng(0), tier, consented, arrays)
    frame = pd.DataFrame({"tier": tier, "choice": choice, "p": propensity})
    stats = frame.groupby(["tier", "choice"]).agg(share=("p", "size"), p=("p", "first"))
    stats["share"] /= n // 2
    assert np.allclose(stats["share"], stats["p"], atol=0.015)
    assert stats.loc[0, "p"].nunique() > 1  # not uniform
    pct20 = default_catalog().offer_ids.index("pct20")
    assert pct20 not in stats.loc[2].index  # pct20 is for occasional and mid customers only
    assert set(channel[choice <= arrays.k]) == {c.CHANNELS.index("email")}


def _state(n: int, **values: float) -> CustomerState:
    base = {
        "recency_days": 200.0,
        "frequency": 10.0,
        "lifetime_revenue": 1000.0,
        "discount_share": 0.2,
        "delivery_issues": 0.0,
        "prior_contacts": 0.0,
        "p_base": 0.0,
        "revenue_if_convert": 60.0,
        "margin_if_convert": 20.0,
    }
    base.update(values)
    return CustomerState(**{k: np.full(n, v) for k, v in base.items()})


def test_true_response_drivers() -> None:
    model = TrueResponseModel(default_catalog())
    j = {o: i for i, o in enumerate(model.option_ids)}
    hunter, loyal = _state(1, discount_share=0.8), _state(1, discount_share=0.0)
    lift = model.probabilities(hunter) - model.probabilities(hunter)[:, [j["holdout"]]]
    lift_loyal = model.probabilities(loyal) - model.probabilities(loyal)[:, [j["holdout"]]]
    assert lift[0, j["pct10"]] > 2 * lift_loyal[0, j["pct10"]]
    bumpy = model.probabilities(_state(1, delivery_issues=3.0))
    smooth = model.probabilities(_state(1))
    assert (
        bumpy[0, j["freeship"]] - bumpy[0, j["holdout"]]
        > smooth[0, j["freeship"]] - smooth[0, j["holdout"]]
    )
    high = model.probabilities(_state(1, lifetime_revenue=5000.0))
    assert (
        high[0, j["expert"]] - high[0, j["holdout"]]
        > smooth[0, j["expert"]] - smooth[0, j["holdout"]]
    )
    tired = model.probabilities(_state(1, prior_contacts=3.0))
    assert tired[0, j["none"]] < smooth[0, j["none"]]
    assert tired[0, j["holdout"]] == smooth[0, j["holdout"]]  # fatigue needs a contact
    # a customer who orders anyway: an incentive only gives margin away
    anyway = model.incremental_margin(_state(1, p_base=0.6, discount_share=0.0))
    assert anyway[0, j["pct20"]] < 0 < anyway[0, j["none"]] + 1e-9
