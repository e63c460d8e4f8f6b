"""Stable reason codes of the decision engine.

Every blocked (customer, option, channel) cell carries exactly one *exclusion* code: the first
guardrail, in `EXCLUSION_ORDER`, that blocked it. Inside the engine the codes are small
integers (their position in `EXCLUSION_ORDER`, 0 meaning "allowed"), so masks combine as numpy
arrays; they become strings only when a decision is materialized. The order is also the order
of the pipeline, which is what makes "the channel that got furthest" a simple maximum.

*Choice* codes explain the decision itself (why this option, or why no contact).

The strings end up in the decision log, the API and the metrics: never change the meaning of
an existing code; add a new one. The cap codes are the same strings as the store's cap check
(`serving.store.caps`), so a contact blocked inside the store's transaction and one blocked
by the engine read alike.
"""

from __future__ import annotations

from typing import Final

# --- exclusion codes (one per blocked option), in pipeline order ---------------------------
UNKNOWN_CUSTOMER: Final = "unknown_customer"
"""The customer is not in the feature snapshot: nothing is known, nothing is sent."""
HOLDOUT_GROUP: Final = "holdout_group"
"""The customer is in the policy's holdout group (deterministic hash): no contact. A choice
code only (the holdout is drawn among customers a contact is due to, after every guardrail);
it keeps its place in `EXCLUSION_ORDER` so the other codes' numbers do not move."""
CHANNEL_NOT_ELIGIBLE: Final = "channel_not_eligible"
"""The channel is not in `policy.eligibility.channels`."""
CONSENT_UNKNOWN: Final = "consent_unknown"
"""No consent is recorded for the channel; consent is never assumed."""
CONSENT_OPTED_OUT: Final = "consent_opted_out"
"""The customer opted out of (or unsubscribed from / complained on) the channel."""
CHANNEL_OFF_BY_PREFERENCE: Final = "channel_off_by_preference"
"""The customer's own preferences switch the channel off."""
LAPSE_STATE_NOT_ELIGIBLE: Final = "lapse_state_not_eligible"
"""The lapse state is unknown or not in `policy.eligibility.lapse_states`."""
TIER_NOT_ELIGIBLE: Final = "tier_not_eligible"
"""The value tier is unknown or not in `policy.eligibility.value_tiers`."""
SUNSET: Final = "sunset"
"""The journey's last stage was sent less than `journey.sunset_days` ago."""
STAGE_TOO_SOON: Final = "stage_too_soon"
"""Fewer than the stage's `min_days_since_previous` days since the previous contact."""
CAP_MIN_GAP: Final = "cap_min_gap"
"""The previous contact (any channel) is within `frequency.min_gap_hours`."""
CAP_ACROSS_CHANNELS: Final = "cap_across_channels"
"""An across-channel window (policy or the customer's own frequency) is full."""
CAP_CHANNEL: Final = "cap_channel"
"""A window of this channel (`frequency.per_channel`) is full."""
OFFER_CHANNEL_NOT_ALLOWED: Final = "offer_channel_not_allowed"
"""The offer cannot be sent on this channel (`channels` in offers.yaml)."""
OFFER_TIER_NOT_ELIGIBLE: Final = "offer_tier_not_eligible"
"""The customer's value tier is outside the offer's min/max tier."""
OFFER_NOT_VALID_NOW: Final = "offer_not_valid_now"
"""The decision date is outside the offer's validity dates."""
STAGE_OFFER_TYPE_NOT_ALLOWED: Final = "stage_offer_type_not_allowed"
"""The journey stage does not allow this offer type."""
CAP_REPEAT_OFFER: Final = "cap_repeat_offer"
"""The same offer was sent within `frequency.no_repeat_offer_days`."""
MARGIN_FLOOR: Final = "margin_floor"
"""Expected order margin after the incentive's cost would fall under a floor (or is unknown)."""
BUDGET_EXHAUSTED: Final = "budget_exhausted"
"""The offer reached a redemption or cost limit (per day or in total)."""
NOT_IN_CANDIDATES: Final = "not_in_candidates"
"""The request restricted the candidates and this option was not among them."""

EXCLUSION_ORDER: Final[tuple[str, ...]] = (
    "",  # 0 = allowed
    UNKNOWN_CUSTOMER,
    HOLDOUT_GROUP,
    NOT_IN_CANDIDATES,
    CHANNEL_NOT_ELIGIBLE,
    CONSENT_UNKNOWN,
    CONSENT_OPTED_OUT,
    CHANNEL_OFF_BY_PREFERENCE,
    LAPSE_STATE_NOT_ELIGIBLE,
    TIER_NOT_ELIGIBLE,
    SUNSET,
    STAGE_TOO_SOON,
    CAP_MIN_GAP,
    CAP_ACROSS_CHANNELS,
    CAP_CHANNEL,
    OFFER_CHANNEL_NOT_ALLOWED,
    OFFER_TIER_NOT_ELIGIBLE,
    OFFER_NOT_VALID_NOW,
    STAGE_OFFER_TYPE_NOT_ALLOWED,
    CAP_REPEAT_OFFER,
    MARGIN_FLOOR,
    BUDGET_EXHAUSTED,
)
ALLOWED: Final = 0
CODE: Final[dict[str, int]] = {name: i for i, name in enumerate(EXCLUSION_ORDER) if name}

# --- choice codes (why this decision) --------------------------------------------------------
CHOSEN_BEST_VALUE: Final = "chosen_best_value"
"""The allowed option with the highest expected incremental margin."""
CHOSEN_BY_EXPLORATION: Final = "chosen_by_exploration"
"""Drawn by the exploration floor rather than being the best option."""
CHOSEN_BY_RULES: Final = "chosen_by_rules"
"""Rules-only heuristic: content, then a plain message, then the cheapest incentive."""
MODEL_UNAVAILABLE: Final = "model_unavailable"
"""No model scores were available; the decision is rules-only (model_version 'rules-only')."""
NO_POSITIVE_VALUE: Final = "no_positive_value"
"""The best allowed option's expected incremental margin is <= 0: no contact is better."""
NO_ALLOWED_OPTION: Final = "no_allowed_option"
"""Every option is blocked by a guardrail (see the excluded options): no contact now."""

CHOICE_ORDER: Final[tuple[str, ...]] = (
    "",
    UNKNOWN_CUSTOMER,
    HOLDOUT_GROUP,
    NO_ALLOWED_OPTION,
    NO_POSITIVE_VALUE,
    CHOSEN_BEST_VALUE,
    CHOSEN_BY_EXPLORATION,
    CHOSEN_BY_RULES,
)
CHOICE_CODE: Final[dict[str, int]] = {name: i for i, name in enumerate(CHOICE_ORDER) if name}

ALL_REASONS: Final[frozenset[str]] = frozenset(
    [*EXCLUSION_ORDER[1:], *CHOICE_ORDER[1:], MODEL_UNAVAILABLE]
)
