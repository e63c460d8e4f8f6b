"""Frequency caps as the store checks them: plain values, and a pure check over past contacts.

`ContactCaps` is what `Store.try_record_contact` enforces inside its transaction. Build it
from the policy with `ContactCaps.from_policy` and tighten it with the customer's own
preferences with `tightened`; `check_caps` is a pure function, so the rule can be tested
without a database and reused by offline simulation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final

from features.constants import CHANNELS, NO_INCENTIVE
from serving.policy import FrequencyCaps
from serving.store.records import PastContact, Preferences

# Reason codes of a blocked contact (stable: they end up in the decision log and the API).
CAP_ACROSS_CHANNELS: Final = "cap_across_channels"
CAP_CHANNEL: Final = "cap_channel"
CAP_MIN_GAP: Final = "cap_min_gap"
CAP_REPEAT_OFFER: Final = "cap_repeat_offer"
# Live consent checked in the same transaction (same strings as the engine's exclusions).
CONSENT_OPTED_OUT: Final = "consent_opted_out"
CHANNEL_OFF_BY_PREFERENCE: Final = "channel_off_by_preference"


@dataclass(frozen=True)
class CapWindow:
    """At most `max_contacts` contacts in `days` days, on `channel` or on all (None)."""

    max_contacts: int
    days: int
    channel: str | None = None


@dataclass(frozen=True)
class ContactCaps:
    """All limits that apply to one customer's next contact."""

    windows: tuple[CapWindow, ...] = ()
    min_gap: timedelta = timedelta(0)
    no_repeat_offer_days: int = 0
    channels_off: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_policy(cls, caps: FrequencyCaps) -> ContactCaps:
        windows = [CapWindow(w.max_contacts, w.days) for w in caps.across_channels]
        for channel, ws in caps.per_channel.items():
            windows += [CapWindow(w.max_contacts, w.days, channel) for w in ws]
        return cls(
            windows=tuple(windows),
            min_gap=timedelta(hours=caps.min_gap_hours),
            no_repeat_offer_days=caps.no_repeat_offer_days,
        )

    def for_preferences(self, prefs: Preferences | None) -> ContactCaps:
        """These caps tightened by a customer's own frequency and channel choices."""
        if prefs is None:
            return self
        off = [] if prefs.channels is None else [c for c in CHANNELS if c not in prefs.channels]
        return self.tightened(prefs.max_contacts, prefs.per_days, off)

    def tightened(
        self,
        max_contacts: int | None = None,
        per_days: int | None = None,
        channels_off: Sequence[str] = (),
    ) -> ContactCaps:
        """These caps plus a customer's own limit; preferences can only add restrictions."""
        windows = self.windows
        if max_contacts is not None and per_days is not None:
            windows = (*windows, CapWindow(max_contacts, per_days))
        return replace(
            self, windows=windows, channels_off=self.channels_off | frozenset(channels_off)
        )

    @property
    def horizon(self) -> timedelta:
        """How far back contacts matter for these caps."""
        days = max([w.days for w in self.windows] + [self.no_repeat_offer_days, 0])
        return max(timedelta(days=days), self.min_gap)


def check_caps(
    past: Sequence[PastContact],
    caps: ContactCaps,
    now: datetime,
    channel: str,
    offer_id: str | None,
) -> tuple[str, str] | None:
    """The first cap a new contact would break, as (reason code, detail), or None if none.

    A window of `days` days counts contacts with `ts > now - days`; contacts dated after `now`
    (clock skew between callers) count too, which errs on the side of fewer contacts.
    """
    if channel in caps.channels_off:
        return CAP_CHANNEL, f"channel {channel} is switched off by the customer"
    if caps.min_gap > timedelta(0):
        recent = [p for p in past if p.ts > now - caps.min_gap]
        if recent:
            last = max(p.ts for p in recent)
            return CAP_MIN_GAP, f"last contact at {last.isoformat()} is within {caps.min_gap}"
    for w in caps.windows:
        start = now - timedelta(days=w.days)
        n = sum(1 for p in past if p.ts > start and (w.channel is None or p.channel == w.channel))
        if n >= w.max_contacts and (w.channel is None or w.channel == channel):
            code = CAP_ACROSS_CHANNELS if w.channel is None else CAP_CHANNEL
            scope = w.channel or "all channels"
            return code, f"{n} contact(s) on {scope} in {w.days} days (max {w.max_contacts})"
    # A plain message (`none`) is not an offer: the engine never blocks it as a repeat either.
    if offer_id is not None and offer_id != NO_INCENTIVE and caps.no_repeat_offer_days > 0:
        start = now - timedelta(days=caps.no_repeat_offer_days)
        if any(p.offer_id == offer_id and p.ts > start for p in past):
            return CAP_REPEAT_OFFER, (
                f"offer {offer_id} was sent within {caps.no_repeat_offer_days} days"
            )
    return None
