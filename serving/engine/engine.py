"""`decide`: one vectorized decision over customers x options x channels.

candidates -> guardrail reason codes (`rules.evaluate`) -> values for what remains (the
scorer's, or the rules-only preference) -> choice with exploration (`choose`) -> a columnar
`DecisionBatch`. The same call serves one API request (n = 1) and a batch of a million; it
builds no DataFrame.

Defined behaviours:

- unknown customer (not in the snapshot): action `none`, reason `unknown_customer`;
- holdout (`policy.holdout`): drawn only among customers whose decision is a contact after
  every guardrail and the choice (a stable hash of salt and customer id, so a customer is
  held out in every decision where they would be contacted): action `holdout`, reason
  `holdout_group`, no contact; the batch keeps the replaced option, channel, value and its
  propensity (`Decision.replaced`), so the control group is compared like with like. The
  holdout's propensity is the share (the probability of being held out, given a contact
  was due); a contact's is conditional on not being held out;
- consent unknown or opted out on every usable channel: every option is excluded with
  `consent_unknown` / `consent_opted_out`, action `none`, reason `no_allowed_option`;
- no scores (model missing or broken; the caller passes `scores=None`): rules-only choice,
  reasons start with `model_unavailable`, model version `rules-only`;
- `channel="auto"`: for each option, the first channel of `policy.auto_channels()` on which
  it passes every guardrail; an excluded option reports the reason of the channel that got
  furthest through the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from features.constants import CHANNELS
from serving.engine import reasons as r
from serving.engine.choose import DecisionKey, choose, rules_only_values
from serving.engine.decision import HOLDOUT, MESSAGE, NONE, OFFER, RULES_ONLY, DecisionBatch
from serving.engine.errors import EngineInputError
from serving.engine.options import OptionSet
from serving.engine.rules import BudgetUsage, budget_exhausted, evaluate, stage_type_table
from serving.engine.state import CustomerBatch
from serving.engine.timeutil import to_days
from serving.policy import Policy

AUTO = "auto"


@dataclass(frozen=True)
class Scores:
    """A scorer's output for n customers x K options (in the OptionSet's order).

    Attributes:
        p_convert: probability of an order within the response window if sent.
        value: expected incremental margin against not contacting, net of the incentive's
            expected cost (what the choice maximizes). NaN = not scorable.
        model_version: recorded with each decision.
    """

    p_convert: npt.NDArray[np.float64]
    value: npt.NDArray[np.float64]
    model_version: str


@dataclass(frozen=True, eq=False)
class _Plan:
    """What `decide` derives from (options, policy, channel) alone, built once per triple:
    the channels tried and their indices, the stage x offer-type table, the names the result
    arrays are indexed into. Per-request work is then only the arrays that change."""

    channels: tuple[str, ...]
    channel_idx: npt.NDArray[np.int64]
    channel_names: npt.NDArray[np.object_]  # channels plus None (no contact)
    stage_table: npt.NDArray[np.bool_]
    stage_names: tuple[str, ...]
    all_candidates: npt.NDArray[np.bool_]
    no_budget_block: npt.NDArray[np.bool_]


_ACTION_NAMES = np.array([OFFER, MESSAGE, NONE, HOLDOUT], dtype=object)
_PLANS: dict[tuple[int, int, str], tuple[OptionSet, Policy, _Plan]] = {}


def _plan(options: OptionSet, policy: Policy, channel: str) -> _Plan:
    """The `_Plan` of (options, policy, channel), cached by the identity of options and
    policy: both are immutable and loaded once (hashing them would cost more than a
    decision); an invalid channel raises here every time, as it is never cached."""
    key = (id(options), id(policy), channel)
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is options and hit[1] is policy:
        return hit[2]
    channels = resolve_channels(channel, policy)
    k = len(options)
    plan = _Plan(
        channels=channels,
        channel_idx=np.array([CHANNELS.index(c) for c in channels], dtype=np.int64),
        channel_names=np.array([*channels, None], dtype=object),
        stage_table=stage_type_table(options, policy.journey),
        stage_names=tuple(s.name for s in policy.journey.stages),
        all_candidates=np.ones(k, dtype=bool),
        no_budget_block=np.zeros(k, dtype=bool),
    )
    for a in (plan.channel_idx, plan.channel_names, plan.stage_table, plan.all_candidates):
        a.flags.writeable = False
    plan.no_budget_block.flags.writeable = False
    if len(_PLANS) > 64:
        _PLANS.clear()
    _PLANS[key] = (options, policy, plan)
    return plan


def resolve_channels(channel: str, policy: Policy) -> tuple[str, ...]:
    """The channels to try, best first: the one requested, or the policy's order for `auto`."""
    if channel == AUTO:
        return policy.auto_channels() or policy.channel_preference
    if channel not in CHANNELS:
        raise EngineInputError(
            f"channel: must be 'auto' or one of {', '.join(CHANNELS)}, got '{channel}'"
        )
    return (channel,)


def decide(
    batch: CustomerBatch,
    options: OptionSet,
    policy: Policy,
    scores: Scores | None,
    now: datetime,
    channel: str = "email",
    decision_key: DecisionKey = "",
    candidate_offer_ids: Iterable[str] | None = None,
    budget_usage: Mapping[str, BudgetUsage] | None = None,
) -> DecisionBatch:
    """Decide for every customer of `batch`.

    Args:
        batch: the customers (snapshot plus live overlay).
        options: the option set (catalog offers plus `none`).
        policy: the validated policy.
        scores: model scores, or None for rules-only mode.
        now: the decision time (naive = UTC).
        channel: a channel name or `auto`.
        decision_key: what makes the exploration draw differ between decisions of one
            customer (e.g. the request id, or campaign id + date); same key, same draw.
            One key for every customer, or one per customer (requests decided together:
            customer i draws as if decided alone under key i).
        candidate_offer_ids: restrict the options to these (plus `none`).
        budget_usage: usage per offer id, checked against the offers' budgets.
    """
    n, k = len(batch), len(options)
    day = to_days(now)
    plan = _plan(options, policy, channel)
    channels = plan.channels
    ids = batch.customer_ids
    candidates = (
        plan.all_candidates if candidate_offer_ids is None else options.mask_of(candidate_offer_ids)
    )
    budget = budget_exhausted(options, budget_usage) if budget_usage else plan.no_budget_block
    codes, journey = evaluate(
        batch,
        options,
        policy,
        day,
        channels,
        plan.channel_idx,
        candidates,
        budget,
        stage_table=plan.stage_table,
    )
    ok = codes == 0
    allowed = ok.any(axis=2)
    first_channel = np.argmax(ok, axis=2)
    exclusion = np.where(allowed, 0, codes.max(axis=2))

    if scores is None:
        values = rules_only_values(options, batch.expected_revenue)
        model_version = RULES_ONLY
    else:
        for name in ("p_convert", "value"):
            shape = np.shape(getattr(scores, name))
            if shape != (n, k):
                raise EngineInputError(f"scores.{name}: expected shape ({n}, {k}), got {shape}")
        values = np.asarray(scores.value, dtype=np.float64)
        model_version = scores.model_version
    picked = choose(
        allowed,
        values,
        policy.exploration.epsilon,
        ids,
        decision_key,
        require_positive=scores is not None,
        floor=policy.exploration.floor,
        among_positive=policy.exploration.among == "positive",
    )
    chosen = picked.chosen
    sent = chosen >= 0
    # the control group: only among the customers a contact is due to, after every guardrail
    holdout = (
        policy.holdout_mask(ids) & batch.known & sent
        if policy.holdout.share > 0
        else np.zeros(n, dtype=bool)
    )
    rows = np.arange(n)
    safe = np.where(sent, chosen, 0)
    incentive = options.is_incentive[safe]
    # indices into _ACTION_NAMES: offer, message, none, holdout
    kind = np.where(sent, np.where(incentive, 0, 1), 2)
    kind[holdout] = 3
    action = _ACTION_NAMES[kind]
    chan = plan.channel_names[np.where(sent, first_channel[rows, safe], len(channels))]

    choice = np.where(
        picked.explored,
        r.CHOICE_CODE[r.CHOSEN_BY_EXPLORATION],
        r.CHOICE_CODE[r.CHOSEN_BY_RULES if scores is None else r.CHOSEN_BEST_VALUE],
    )
    choice = np.where(picked.no_positive_value, r.CHOICE_CODE[r.NO_POSITIVE_VALUE], choice)
    choice = np.where(~picked.any_allowed, r.CHOICE_CODE[r.NO_ALLOWED_OPTION], choice)
    choice = np.where(holdout, r.CHOICE_CODE[r.HOLDOUT_GROUP], choice)
    choice = np.where(~batch.known, r.CHOICE_CODE[r.UNKNOWN_CUSTOMER], choice)
    propensity = np.where(holdout, policy.holdout.share, picked.propensity)
    stage = np.where(batch.known & ~journey.sunset, journey.stage_index + 1, 0)
    p_convert = (
        np.where(sent, np.asarray(scores.p_convert, dtype=np.float64)[rows, safe], np.nan)
        if scores is not None
        else np.full(n, np.nan)
    )
    return DecisionBatch(
        customer_ids=ids,
        options=options,
        stage_names=plan.stage_names,
        action=action,
        chosen=chosen,
        channel=chan,
        stage=stage,
        value=np.where(sent & (scores is not None), values[rows, safe], np.nan),
        propensity=propensity,
        option_propensity=picked.propensity,
        p_convert=p_convert,
        values=values,
        exclusion=exclusion,
        choice=choice,
        rules_only=scores is None,
        model_version=model_version,
        policy_version=policy.version,
    )
