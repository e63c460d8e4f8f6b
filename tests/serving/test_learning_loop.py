"""The learning loop on the synthetic world, against its TRUE response model.

Round 1 decides a wave with a model trained on the world's randomized history; each later
round exports the store's log (`serving.learning.export_log` merged with the base data),
retrains on it with `training.pipeline.fit_policy` and decides the next wave. Every wave:
the batch engine decides for the lapsed customers with exploration (epsilon > 0) and records
to the store; outcomes are drawn from `TrueResponseModel` and posted back as `order` and
`unsubscribe` events, exactly as a client would report them.

The policy's worth is measured by the TRUE expected incremental margin of its greedy choice
(exact under the true model, no sampling noise) per decided customer: no contact and the
holdout group are worth 0. "Does not fall across rounds" is checked on the same customers:
each retrained model against the model it replaces, both deciding the new wave. The raw
per-wave values are not comparable, because each wave's lapsed customers are harder than the
last (already contacted, fatigued): the oracle's value falls too (measured at 8,000
customers, seed 11: oracle 1.50, 0.97, 0.86 per decided customer in waves 1-3).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features import constants as c
from features import modeling_frame as mf
from features.build import build_customer_view
from features.datadir import load_data_dir
from features.dataset import DataSet
from features.featureset import FeatureSet
from features.snapshot import Snapshot, write_snapshot
from features.synthetic import CustomerState, SyntheticWorld, generate_world, write_world
from features.synthetic import config as wcfg
from features.synthetic.state import true_state
from models.policy_model import PolicyModel
from serving.batch.local import Wave, score_local
from serving.decide import Decider, decide_rows, gather
from serving.engine import OptionSet
from serving.learning import export_log
from serving.model_scorer import PolicyScorer
from serving.policy import Exploration, Policy, parse_policy
from serving.store import ContactCaps, EventRecord, Store, upgrade_database
from training.inputs import load_training_inputs
from training.pipeline import fit_policy

pytestmark = pytest.mark.slow

N_CUSTOMERS = 8_000
WORLD_SEED = 11
ROUNDS = 3
WAVE_DAYS = 35
DAY = timedelta(days=1)
REFIT_SD = 0.05
"""Standard deviation (currency per decided customer) of the TRUE value change when a model
(n_bags=2) is replaced by its retrained successor, on the same customers. Measured as the
spread of learned - previous over 3 world seeds x 2 retrainings at 8,000 customers (seed 11:
+0.043, +0.090; 12: +0.031, -0.003; 13: -0.035, -0.039; SD 0.050), while the spread over
customers of one comparison (`change_se`) is only 0.008-0.012: the retrained model itself,
not the customers or the sampled outcomes, is the noise. A retrained model may lose at most
3 x sqrt(REFIT_SD^2 + change_se^2) (about 0.15) against the one it replaces."""

TYPES = "[percent_discount, amount_discount, free_shipping, bundle, extended_warranty, " + (
    "expert_consult, content, none]"
)
POLICY_YAML = f"""
journey:
  stages:
    - {{name: first, offer_types: {TYPES}, min_days_since_previous: 0}}
    - {{name: second, offer_types: {TYPES}, min_days_since_previous: 0}}
    - {{name: third, offer_types: {TYPES}, min_days_since_previous: 0}}
    - {{name: fourth, offer_types: {TYPES}, min_days_since_previous: 0}}
  sunset_days: 0
frequency:
  across_channels: [{{max_contacts: 1, days: 7}}]
holdout: {{share: 0.1, salt: loop}}
exploration: {{epsilon: 0.2}}
eligibility:
  lapse_states: [at_risk, lapsed]
  channels: [email, sms, push]
channel_preference: [email, sms, push]
"""


class _Sink:
    """Collects the batch engine's output tables."""

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []

    def write(self, table: pa.Table) -> None:
        self.tables.append(table)

    def frame(self) -> pd.DataFrame:
        return pa.concat_tables(self.tables).to_pandas()


def snapshot_for(data: DataSet, at: datetime, fs: FeatureSet, folder: Path) -> Snapshot:
    """The serving snapshot as of `at`, in the model's feature set (its vocabulary)."""
    view = build_customer_view(data, pd.Timestamp(at), feature_set=fs)
    write_snapshot(view, folder)
    return Snapshot.load(folder)


@dataclass
class RoundResult:
    """One round's measurements."""

    learned: float
    previous_model: float | None
    change_se: float | None
    random: float
    oracle: float
    realised_incremental: float
    decided: int
    contacts: int


def option_columns(world: SyntheticWorld, offer_ids: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Index into the truth's options: the offer sent, else holdout (= nothing sent)."""
    col = {o: j for j, o in enumerate(world.model.option_ids)}
    hold = col[c.HOLDOUT]
    sent = np.isin(action, ("offer", "message"))
    return np.array(
        [col[str(o)] if s else hold for o, s in zip(offer_ids, sent, strict=True)], np.int64
    )


def greedy_value(
    decider: Decider,
    snap: Snapshot,
    ids: list[str],
    at: datetime,
    store: Store,
    world: SyntheticWorld,
    im: np.ndarray,
    rows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per customer: the greedy policy's true value, and uniform random over allowed options'."""
    matrix, known = gather(snap, ids)
    d = decide_rows(
        decider, matrix, known, ids, snap.feature_set, snap.as_of.to_pydatetime(), at,
        "auto", "greedy", store=store,
    ).batch  # fmt: skip
    cols = option_columns(world, d.offer_id, d.action)
    learned = im[rows, cols]
    col = {o: j for j, o in enumerate(world.model.option_ids)}
    truth_cols = np.array([col[o] for o in d.options.offer_ids])
    allowed = (d.exclusion == 0) & (d.action != "holdout")[:, None]
    per_option = im[rows][:, truth_cols]
    k = allowed.sum(axis=1)
    rand = np.where(k > 0, (per_option * allowed).sum(axis=1) / np.maximum(k, 1), 0.0)
    return learned, rand


def post_outcomes(
    store: Store,
    world: SyntheticWorld,
    state: CustomerState,
    decisions: pd.DataFrame,
    at: datetime,
    rnd: int,
    rng: np.random.Generator,
) -> float:
    """Draw every customer's orders (and unsubscribes) in the window from the truth and post
    them; return the realised margin of the decided customers minus what the truth says they
    would have earned held out."""
    ids = world.tables[c.CUSTOMERS][c.CUSTOMER_ID].astype(str).to_numpy()
    idx = pd.Index(ids)
    hold = world.model.option_ids.index(c.HOLDOUT)
    chosen = np.full(len(ids), hold)
    decision_of = np.full(len(ids), None, dtype=object)
    channel_of = np.full(len(ids), None, dtype=object)
    rows = idx.get_indexer(pd.Index(decisions[c.CUSTOMER_ID].astype(str)))
    chosen[rows] = option_columns(
        world, decisions[c.OFFER_ID].to_numpy(), decisions["action"].to_numpy()
    )
    decision_of[rows] = decisions["decision_id"].to_numpy()
    channel_of[rows] = decisions[c.CHANNEL].to_numpy()
    p = world.model.probabilities(state)[np.arange(len(ids)), chosen]
    cost = world.model.offer_costs(state)[np.arange(len(ids)), chosen]
    orders = rng.random(len(ids)) < p
    delay = np.clip(rng.exponential(6.0, len(ids)), 0.05, world.config.attribution_days - 1.05)
    offers = (*world.catalog.offers, None, None)
    discount_types = ("percent_discount", "amount_discount")
    favourite = np.asarray(wcfg.CATEGORIES)[world.population.favorite]
    for i in np.flatnonzero(orders):
        offer = offers[chosen[i]]
        is_discount = offer is not None and offer.type in discount_types
        rev = float(state.revenue_if_convert[i])
        store.append_event(
            EventRecord(
                event_id=f"r{rnd}-order-{ids[i]}",
                customer_id=str(ids[i]),
                ts=at + timedelta(days=float(delay[i])),
                type="order",
                decision_id=decision_of[i] if chosen[i] != hold else None,
                revenue=round(rev - (cost[i] if is_discount else 0.0), 2),
                margin=round(float(state.margin_if_convert[i] - cost[i]), 2),
                payload={
                    c.CATEGORY: str(favourite[i]),
                    c.DISCOUNT_AMOUNT: round(float(cost[i]), 2) if is_discount else 0.0,
                },
            )
        )
    contacted = np.flatnonzero(chosen != hold)
    ch = np.array([c.CHANNELS.index(x) for x in channel_of[contacted]], np.int64)
    p_unsub = world.model.unsubscribe_probability(state.take(contacted), ch)
    for i in contacted[rng.random(len(contacted)) < p_unsub]:
        store.append_event(
            EventRecord(
                event_id=f"r{rnd}-unsub-{ids[i]}",
                customer_id=str(ids[i]),
                ts=at + 2 * DAY,
                type="unsubscribe",
                channel=str(channel_of[i]),
                decision_id=str(decision_of[i]),
            )
        )
    margin = np.where(orders, state.margin_if_convert - cost, 0.0)
    baseline = world.model.probabilities(state)[:, hold] * state.margin_if_convert
    return float((margin - baseline)[rows].mean())


def run_wave(
    rnd: int,
    world: SyntheticWorld,
    data: DataSet,
    model: PolicyModel,
    previous: PolicyModel | None,
    policy: Policy,
    store: Store,
    at: datetime,
    tmp: Path,
    rng: np.random.Generator,
) -> tuple[RoundResult, pd.DataFrame]:
    fs = FeatureSet.from_json(model.feature_set)
    snap = snapshot_for(data, at, fs, tmp / f"snapshot-{rnd}")
    state = true_state(world, data, at)
    ids = world.tables[c.CUSTOMERS][c.CUSTOMER_ID].astype(str)
    lapsed = np.flatnonzero((state.recency_days >= 90) & (state.recency_days <= 1000))
    wave_ids = ids.to_numpy()[lapsed].tolist()
    im = world.model.incremental_margin(state)
    options = OptionSet.from_catalog(world.catalog, policy.offer_budget_defaults)
    caps = ContactCaps.from_policy(policy.frequency)
    greedy = policy.model_copy(update={"exploration": Exploration(epsilon=0.0)})
    scorer = PolicyScorer(model, f"loop/{rnd}")
    learned, rand = greedy_value(
        Decider(options, greedy, scorer, caps), snap, wave_ids, at, store, world, im, lapsed
    )
    prev = change_se = None
    if previous is not None:
        prev_dec = Decider(options, greedy, PolicyScorer(previous, f"loop/{rnd - 1}"), caps)
        prev_values, _ = greedy_value(prev_dec, snap, wave_ids, at, store, world, im, lapsed)
        prev = float(prev_values.mean())
        change = learned - prev_values
        change_se = float(change.std(ddof=1) / np.sqrt(len(change)))
    sink = _Sink()
    result = score_local(
        snap,
        Decider(options, policy, scorer, caps),
        sink,
        Wave(f"loop-{rnd}", at, "auto"),
        store=store,
        record=True,
        customers=wave_ids,
    )
    decisions = sink.frame()
    realised = post_outcomes(store, world, state, decisions, at, rnd, rng)
    assert result.recorded is not None
    eligible = im[lapsed][(decisions["action"] != "holdout").to_numpy()]
    wave = RoundResult(
        learned=float(learned.mean()),
        previous_model=prev,
        change_se=change_se,
        random=float(rand.mean()),
        oracle=float(np.maximum(eligible, 0).sum() / len(lapsed)),
        realised_incremental=realised,
        decided=len(lapsed),
        contacts=result.recorded.contacts,
    )
    return wave, decisions


def run_loop(
    tmp_path: Path, rounds: int = ROUNDS, world_seed: int = WORLD_SEED
) -> list[RoundResult]:
    """Train on the history, then `rounds` waves of decide -> outcomes -> export -> retrain."""
    world = generate_world(N_CUSTOMERS, world_seed)
    base = write_world(world, tmp_path / "base")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade_database(url)
    store = Store.from_url(url)
    policy = parse_policy(POLICY_YAML)
    rng = np.random.default_rng(5)
    start = datetime.fromisoformat(world.config.end) + DAY
    data = load_data_dir(base)
    model, _ = fit_policy(load_training_inputs(base), seed=0, n_bags=2)
    previous: PolicyModel | None = None
    waves: list[RoundResult] = []
    last = pd.DataFrame()
    for rnd in range(1, rounds + 1):
        at = start + (rnd - 1) * WAVE_DAYS * DAY
        if rnd > 1:
            out = tmp_path / f"export-{rnd}"
            counts = export_log(store, out, base=base)
            assert counts.report is not None and counts.report.ok, counts.report
            data = load_data_dir(out)
            inputs = load_training_inputs(out)
            assert inputs.offer_response is not None
            check_export(inputs.offer_response.data, last, f"loop-{rnd - 1}", policy)
            previous, (model, _) = model, fit_policy(inputs, seed=rnd, n_bags=2)
        wave, last = run_wave(rnd, world, data, model, previous, policy, store, at, tmp_path, rng)
        waves.append(wave)
    store.dispose()
    return waves


def test_learning_loop_improves_on_random_and_does_not_fall(tmp_path: Path) -> None:
    waves = run_loop(tmp_path)
    for w in waves:
        assert w.learned > w.random, w
        assert w.learned <= w.oracle + 1e-9, w
    for w in waves[1:]:
        assert w.previous_model is not None and w.change_se is not None
        tolerance = 3.0 * float(np.hypot(REFIT_SD, w.change_se))
        assert w.learned >= w.previous_model - tolerance, waves


def check_export(frame: pd.DataFrame, decisions: pd.DataFrame, wave: str, policy: Policy) -> None:
    """The wave's contacts and holdouts are rows of the frame, with the logged propensities
    made unconditional: an offer's times (1 - holdout share), a holdout's the share itself."""
    rows = frame[frame[c.CAMPAIGN_ID] == wave].set_index(c.CONTACT_ID)
    logged = decisions[decisions["action"].isin(("offer", "message", "holdout"))]
    logged = logged.set_index("decision_id")
    assert set(rows.index) == set(logged.index)
    share = policy.holdout.share
    hold = logged["action"] == "holdout"
    expected = np.where(hold, share, logged["propensity"] * (1 - share))
    got = rows.loc[logged.index, c.PROPENSITY].to_numpy(float)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert (rows.loc[logged.index[hold], c.OFFER_ID] == c.HOLDOUT).all()
    assert rows[mf.CONVERTED].sum() > 0
