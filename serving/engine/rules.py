"""Guardrails as pure functions over arrays.

Each rule returns a boolean *blocked* mask that broadcasts to (customers n, options K,
channels C) — shaped (n, 1, 1) for a rule about the customer, (1, K, 1) for one about the
offer, (n, 1, C) for one about the customer on a channel, and so on. `combine` turns an
ordered list of (reason code, mask) into one (n, K, C) array of integer reason codes: the
first rule, in `reasons.EXCLUSION_ORDER`, that blocked the cell; 0 where nothing did.
`evaluate` is the whole guardrail pipeline for one decision call.

No rule reads a clock, a database or a global: `now` is a float day number (`timeutil`), and
everything else is passed in, so the rules are reused unchanged by the API, batch scoring and
offline simulation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from features.constants import CHANNELS, LAPSE_STATES, NO_INCENTIVE, OFFER_TYPES, VALUE_TIERS
from features.offers import Budget
from serving.engine import reasons as r
from serving.engine.options import OptionSet
from serving.engine.state import CONSENT_OUT, CONSENT_UNKNOWN, CustomerBatch, RecentContacts
from serving.policy import Eligibility, FrequencyCaps, Journey, MarginFloor, Policy

Mask = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def combine(rules: Sequence[tuple[str, Mask | None]], shape: tuple[int, int, int]) -> IntArray:
    """(n, K, C) reason codes: the first rule blocking each cell.

    `rules` must be listed in `EXCLUSION_ORDER` (checked), so "first" is the pipeline order.
    """
    codes = [r.CODE[name] for name, _ in rules]
    if codes != sorted(codes):
        raise ValueError("combine: rules must follow reasons.EXCLUSION_ORDER")
    out = np.zeros(shape, dtype=np.int64)
    # Last rule first, each overwriting what it blocks: the first blocking rule wins.
    for code, (_, mask) in zip(reversed(codes), reversed(rules), strict=True):
        if mask is not None:  # None: the rule cannot block anything in this call
            np.copyto(out, code, where=mask)
    return out


# --- channel rules ---------------------------------------------------------------------------
def channel_not_eligible(eligibility: Eligibility, channels: Sequence[str]) -> Mask:
    """(1, 1, C) channels the policy does not use at all."""
    return np.array([ch not in eligibility.channels for ch in channels])[None, None, :]


def consent_blocks(consent: IntArray, channel_idx: IntArray) -> tuple[Mask, Mask]:
    """(n, 1, C) masks of unknown consent and of opt-out; only `opted_in` passes."""
    c = consent[:, channel_idx][:, None, :]
    return c == CONSENT_UNKNOWN, c == CONSENT_OUT


def channel_off(channels_off: Mask, channel_idx: IntArray) -> Mask:
    """(n, 1, C) channels the customer switched off."""
    return channels_off[:, channel_idx][:, None, :]


def offer_channel(options: OptionSet, channel_idx: IntArray) -> Mask:
    """(1, K, C) offers that cannot go out on a channel."""
    return ~options.channel_ok[:, channel_idx][None, :, :]


# --- eligibility -----------------------------------------------------------------------------
def _lookup(vocabulary: Sequence[str], allowed: Sequence[str]) -> Mask:
    """A table indexed by code + 1 (so code -1, unknown, maps to False)."""
    return np.array([False, *(v in allowed for v in vocabulary)], dtype=bool)


def customer_eligibility(
    lapse_state: IntArray, value_tier: IntArray, eligibility: Eligibility
) -> tuple[Mask, Mask]:
    """(n, 1, 1) masks: lapse state, then value tier, unknown or not eligible."""
    states = _lookup(LAPSE_STATES, eligibility.lapse_states)
    tiers = _lookup(VALUE_TIERS, eligibility.value_tiers)
    return (
        ~states[_known_code(lapse_state, len(LAPSE_STATES)) + 1][:, None, None],
        ~tiers[_known_code(value_tier, len(VALUE_TIERS)) + 1][:, None, None],
    )


def _known_code(codes: IntArray, size: int) -> IntArray:
    """Codes outside the vocabulary count as unknown (-1): never eligible, never an error."""
    return np.where((codes >= 0) & (codes < size), codes, -1)


def offer_tier(value_tier: IntArray, options: OptionSet) -> Mask:
    """(n, K, 1) offers whose tier range excludes the customer's tier."""
    t = value_tier[:, None]
    return ((t < options.min_tier[None, :]) | (t > options.max_tier[None, :]))[:, :, None]


def offer_validity(options: OptionSet, now: float) -> Mask:
    """(1, K, 1) offers outside their validity dates (inclusive, UTC days) on `now`."""
    today = np.floor(now)
    return ((today < options.valid_from) | (today > options.valid_to))[None, :, None]


# --- journey ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class JourneyState:
    """Where each customer stands: the next stage (0-based), sunset, and too soon."""

    stage_index: IntArray
    sunset: npt.NDArray[np.bool_]
    too_soon: npt.NDArray[np.bool_]


def journey_state(
    position: IntArray, last_contact_day: FloatArray, now: float, journey: Journey
) -> JourneyState:
    """The next step of each customer's journey.

    `position` counts contacts since the last order (a purchase resets it to 0), so the next
    stage is `position mod n_stages`. After the last stage (position a positive multiple of
    n_stages) the customer is sunset until `sunset_days` have passed since that last contact;
    the journey then starts again at stage 1. A stage is too soon while fewer than its
    `min_days_since_previous` days have passed since the previous contact. A never-contacted
    customer is neither sunset nor too soon.
    """
    n_stages = len(journey.stages)
    idx = np.mod(position, n_stages)
    since = now - last_contact_day
    min_days = np.array([s.min_days_since_previous for s in journey.stages], dtype=np.float64)
    sunset = (position >= n_stages) & (idx == 0) & (since < journey.sunset_days)
    return JourneyState(idx, sunset, since < min_days[idx])


def stage_type_table(options: OptionSet, journey: Journey) -> Mask:
    """(n_stages, K) whether each stage allows each option's offer type."""
    allowed = np.zeros((len(journey.stages), len(OFFER_TYPES)), dtype=bool)
    for i, s in enumerate(journey.stages):
        allowed[i, [OFFER_TYPES.index(t) for t in s.offer_types]] = True
    return allowed[:, options.offer_type]


def stage_offer_types(
    stage_index: IntArray, options: OptionSet, journey: Journey, table: Mask | None = None
) -> Mask:
    """(n, K, 1) options whose offer type the customer's next stage does not allow.

    `table` is `stage_type_table(options, journey)`, passed in when precomputed.
    """
    t = stage_type_table(options, journey) if table is None else table
    return ~t[stage_index][:, :, None]


# --- contact pressure ------------------------------------------------------------------------
def _snapshot_count(batch: CustomerBatch, now: float, days: float) -> FloatArray:
    """Snapshot contacts that may fall in the `days` window ending at `now` (upper bound).

    The window reaches back into the snapshot by `days - (now - as_of)` days; the smallest
    snapshot window at least that long is used (so it may over-count, never under-count,
    except beyond the longest snapshot window).
    """
    reach = days - (now - batch.snapshot_day)
    if reach <= 0 or not batch.snapshot_windows:
        return np.zeros(len(batch))
    fits = [j for j, w in enumerate(batch.snapshot_windows) if w >= reach]
    j = fits[0] if fits else len(batch.snapshot_windows) - 1
    counts = batch.snapshot_counts[:, j].copy()
    # A customer whose last contact is older than the window has nothing in it.
    counts[~(batch.last_contact_day > now - days)] = 0.0
    return counts


def window_counts(batch: CustomerBatch, now: float, days: float) -> FloatArray:
    """(n,) contacts on any channel in the `days` days before `now`.

    max(live contacts in the window, snapshot count + live contacts after the snapshot): the
    live contacts may or may not also be in the snapshot, and this counts them once either way.
    """
    c = batch.contacts
    n = len(batch)
    inside = c.day > now - days
    live = np.bincount(c.customer[inside], minlength=n).astype(np.float64)
    after = np.bincount(c.customer[inside & (c.day > batch.snapshot_day)], minlength=n)
    return np.maximum(live, _snapshot_count(batch, now, days) + after)


def cap_across_channels(batch: CustomerBatch, now: float, caps: FrequencyCaps) -> Mask:
    """(n, 1, 1) customers at a policy across-channel window, or at their own frequency."""
    blocked = np.zeros(len(batch), dtype=bool)
    for w in caps.across_channels:
        blocked |= window_counts(batch, now, w.days) >= w.max_contacts
    own = ~np.isnan(batch.pref_per_days)
    for days in [] if not own.any() else np.unique(batch.pref_per_days[own]):
        sel = own & (batch.pref_per_days == days)
        blocked[sel] |= (window_counts(batch, now, float(days)) >= batch.pref_max_contacts)[sel]
    return blocked[:, None, None]


def cap_per_channel(
    contacts: RecentContacts, n: int, now: float, caps: FrequencyCaps, channels: Sequence[str]
) -> Mask:
    """(n, 1, C) channels whose own window is full (live contacts only: the snapshot has no
    per-channel counts)."""
    out = np.zeros((n, len(channels)), dtype=bool)
    for j, ch in enumerate(channels):
        code = CHANNELS.index(ch)
        for w in caps.per_channel.get(ch, ()):  # type: ignore[call-overload]
            sel = (contacts.channel == code) & (contacts.day > now - w.days)
            out[:, j] |= np.bincount(contacts.customer[sel], minlength=n) >= w.max_contacts
    return out[:, None, :]


def min_gap(last_contact_day: FloatArray, now: float, hours: float) -> Mask:
    """(n, 1, 1) customers contacted less than `hours` ago (or in the future: clock skew)."""
    if hours <= 0:
        return np.zeros((len(last_contact_day), 1, 1), dtype=bool)
    return (last_contact_day > now - hours / 24.0)[:, None, None]


def repeat_offer(
    contacts: RecentContacts, n: int, options: OptionSet, now: float, days: int
) -> Mask:
    """(n, K, 1) offers sent to the customer within `days` days (live contacts).

    The plain message `none` is not an offer and is never blocked as a repeat.
    """
    out = np.zeros((n, len(options)), dtype=bool)
    if days <= 0 or len(contacts.day) == 0:
        return out[:, :, None]
    index = options.index
    recent = np.flatnonzero(contacts.day > now - days)
    for m in recent:
        k = index.get(contacts.offer_id[m])
        if k is not None and options.offer_ids[k] != NO_INCENTIVE:
            out[contacts.customer[m], k] = True
    return out[:, :, None]


# --- money -----------------------------------------------------------------------------------
def margin_floor(
    expected_revenue: FloatArray,
    expected_margin: FloatArray,
    options: OptionSet,
    floor: MarginFloor,
) -> Mask:
    """(n, K, 1) incentives after which the expected order margin falls under a floor.

    Allowed iff `margin - cost >= max(absolute, share_of_revenue * revenue)`; an unknown
    (NaN) revenue or margin blocks every incentive. Non-incentives are never blocked.
    """
    after = expected_margin[:, None] - options.expected_cost(expected_revenue)
    ok = after >= floor.floor(expected_revenue)[:, None]
    return (options.is_incentive[None, :] & ~ok)[:, :, None]


class BudgetUsage(Protocol):
    """Usage of one offer (the store's `BudgetTotals` fits)."""

    @property
    def day_redemptions(self) -> int: ...
    @property
    def day_cost(self) -> float: ...
    @property
    def total_redemptions(self) -> int: ...
    @property
    def total_cost(self) -> float: ...


def _exhausted(b: Budget, u: BudgetUsage) -> bool:
    limits = (
        (b.max_redemptions_per_day, u.day_redemptions),
        (b.max_cost_per_day, u.day_cost),
        (b.max_redemptions, u.total_redemptions),
        (b.max_cost, u.total_cost),
    )
    return any(limit is not None and used >= limit for limit, used in limits)


def budget_exhausted(options: OptionSet, usage: Mapping[str, BudgetUsage]) -> Mask:
    """(K,) options whose budget (own or policy default) has reached any of its limits."""
    return np.array(
        [
            b is not None and oid in usage and _exhausted(b, usage[oid])
            for oid, b in zip(options.offer_ids, options.budgets, strict=True)
        ],
        dtype=bool,
    )


# --- the pipeline ----------------------------------------------------------------------------
def evaluate(
    batch: CustomerBatch,
    options: OptionSet,
    policy: Policy,
    now: float,
    channels: Sequence[str],
    channel_idx: IntArray,
    candidates: Mask,
    budget_blocked: Mask,
    stage_table: Mask | None = None,
) -> tuple[IntArray, JourneyState]:
    """All guardrails: (n, K, C) reason codes (0 = allowed) and each customer's journey state."""
    n, k = len(batch), len(options)
    journey = journey_state(batch.journey_position, batch.last_contact_day, now, policy.journey)
    unknown_consent, opted_out = consent_blocks(batch.consent, channel_idx)
    bad_state, bad_tier = customer_eligibility(
        batch.lapse_state, batch.value_tier, policy.eligibility
    )
    freq = policy.frequency
    stage_types = stage_offer_types(journey.stage_index, options, policy.journey, stage_table)
    repeats = repeat_offer(batch.contacts, n, options, now, freq.no_repeat_offer_days)
    margins = margin_floor(
        batch.expected_revenue, batch.expected_margin, options, policy.margin_floor
    )
    rules: list[tuple[str, Mask | None]] = [
        (r.UNKNOWN_CUSTOMER, None if batch.known.all() else ~batch.known[:, None, None]),
        (r.NOT_IN_CANDIDATES, None if candidates.all() else ~candidates[None, :, None]),
        (r.CHANNEL_NOT_ELIGIBLE, channel_not_eligible(policy.eligibility, channels)),
        (r.CONSENT_UNKNOWN, unknown_consent),
        (r.CONSENT_OPTED_OUT, opted_out),
        (r.CHANNEL_OFF_BY_PREFERENCE, channel_off(batch.channels_off, channel_idx)),
        (r.LAPSE_STATE_NOT_ELIGIBLE, bad_state),
        (r.TIER_NOT_ELIGIBLE, bad_tier),
        (r.SUNSET, journey.sunset[:, None, None]),
        (r.STAGE_TOO_SOON, journey.too_soon[:, None, None]),
        (r.CAP_MIN_GAP, min_gap(batch.last_contact_day, now, freq.min_gap_hours)),
        (r.CAP_ACROSS_CHANNELS, cap_across_channels(batch, now, freq)),
        (r.CAP_CHANNEL, cap_per_channel(batch.contacts, n, now, freq, channels)),
        (r.OFFER_CHANNEL_NOT_ALLOWED, offer_channel(options, channel_idx)),
        (r.OFFER_TIER_NOT_ELIGIBLE, offer_tier(batch.value_tier, options)),
        (r.OFFER_NOT_VALID_NOW, offer_validity(options, now)),
        (r.STAGE_OFFER_TYPE_NOT_ALLOWED, stage_types),
        (r.CAP_REPEAT_OFFER, repeats),
        (r.MARGIN_FLOOR, margins),
        (r.BUDGET_EXHAUSTED, budget_blocked[None, :, None] if budget_blocked.any() else None),
    ]
    return combine(rules, (n, k, len(channels))), journey
