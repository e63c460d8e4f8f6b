"""`CustomerBatch`: what the guardrails know about n customers, as arrays.

Two sources meet here. The *snapshot* is a feature matrix built point-in-time as of
`as_of` (`features.featureset`, e.g. `winback_v1`); the *live overlay* is what the store
recorded since (contacts sent, consent changes, preferences, orders). The live overlay wins:
an unsubscribe recorded a second ago blocks the next decision even though the snapshot still
says `opted_in`.

How the two combine (conservative: when in doubt, fewer contacts):

- consent: the live status of a channel replaces the snapshot's; a channel with neither stays
  `unknown` (and is blocked: consent is never assumed).
- preferences: only live (the snapshot has none); `channels` lists the allowed channels.
- journey position (contacts since the last order): snapshot `journey_stage` plus live contacts
  after `as_of`; a live order after `as_of` resets it to the live contacts after that order.
- last contact: the later of the snapshot's (`days_since_last_contact`) and the live contacts.
- contact counts for caps: live contacts are kept one by one (per channel, per offer); the
  snapshot adds its across-channel counts `contacts_{7,30,90}d` (see `rules.window_counts`).
- expected order revenue and margin: `aov_lifetime` and `aov_lifetime * margin_rate_lifetime`
  (NaN for a customer without orders, so no incentive passes the margin floor).

Times are float days since the epoch (`timeutil`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from features.constants import CHANNELS, OPTED_IN, OPTED_OUT
from features.featureset import CONTACT_WINDOWS, FeatureSet
from serving.engine.errors import EngineInputError
from serving.engine.timeutil import to_days

CONSENT_IN, CONSENT_OUT, CONSENT_UNKNOWN = 0, 1, 2  # codes of featureset.CONSENT_STATES
_CHANNEL_INDEX = {ch: i for i, ch in enumerate(CHANNELS)}
# The snapshot columns the engine reads; integer-coded ones first (their count is _N_CODES).
_REQUIRED = (
    "lapse_state",
    "value_tier",
    *(f"consent_{ch}" for ch in CHANNELS),
    "journey_stage",
    "days_since_last_contact",
    "days_since_last_order",
    "aov_lifetime",
    "margin_rate_lifetime",
    *(f"contacts_{w}d" for w in CONTACT_WINDOWS),
)
_N_CODES = 2 + len(CHANNELS)


class ContactLike(Protocol):
    """A contact that still counts (the store's `ContactRow` fits)."""

    @property
    def ts(self) -> datetime: ...
    @property
    def channel(self) -> str: ...
    @property
    def offer_id(self) -> str | None: ...


class PreferencesLike(Protocol):
    """A customer's own choices (the store's `Preferences` fits)."""

    @property
    def channels(self) -> tuple[str, ...] | None: ...
    @property
    def max_contacts(self) -> int | None: ...
    @property
    def per_days(self) -> int | None: ...


class LiveLike(Protocol):
    """The live overlay of one customer (the store's `CustomerState` fits)."""

    @property
    def contacts(self) -> Sequence[ContactLike]: ...
    @property
    def consent(self) -> Mapping[str, str]: ...
    @property
    def preferences(self) -> PreferencesLike | None: ...
    @property
    def last_order_ts(self) -> datetime | None: ...


@dataclass(frozen=True)
class LiveContact:
    ts: datetime
    channel: str
    offer_id: str | None = None


@dataclass(frozen=True)
class LivePreferences:
    channels: tuple[str, ...] | None = None
    max_contacts: int | None = None
    per_days: int | None = None


@dataclass(frozen=True)
class LiveState:
    """Plain live overlay for callers without a store (tests, simulation)."""

    contacts: Sequence[LiveContact] = ()
    consent: Mapping[str, str] = field(default_factory=dict)
    preferences: LivePreferences | None = None
    last_order_ts: datetime | None = None


@dataclass(frozen=True)
class RecentContacts:
    """Live contacts of a batch as flat ragged arrays (m contacts)."""

    customer: npt.NDArray[np.int64]
    day: npt.NDArray[np.float64]
    channel: npt.NDArray[np.int64]  # index into CHANNELS, -1 if not a known channel
    offer_id: npt.NDArray[np.object_]

    @classmethod
    def empty(cls) -> RecentContacts:
        return cls(
            np.zeros(0, np.int64),
            np.zeros(0, np.float64),
            np.zeros(0, np.int64),
            np.zeros(0, object),
        )


@dataclass(frozen=True, eq=False)
class CustomerBatch:
    """Arrays for n customers; see the module docstring for where each comes from."""

    customer_ids: npt.NDArray[np.object_]
    known: npt.NDArray[np.bool_]
    lapse_state: npt.NDArray[np.int64]  # code into LAPSE_STATES, -1 unknown
    value_tier: npt.NDArray[np.int64]  # code into VALUE_TIERS, -1 unknown
    consent: npt.NDArray[np.int64]  # (n, len(CHANNELS)) CONSENT_IN / _OUT / _UNKNOWN
    channels_off: npt.NDArray[np.bool_]  # (n, len(CHANNELS))
    pref_max_contacts: npt.NDArray[np.float64]  # NaN = no own limit
    pref_per_days: npt.NDArray[np.float64]
    journey_position: npt.NDArray[np.int64]  # contacts since the last order
    last_contact_day: npt.NDArray[np.float64]  # NaN = never contacted
    last_order_day: npt.NDArray[np.float64]  # NaN = never ordered
    expected_revenue: npt.NDArray[np.float64]
    expected_margin: npt.NDArray[np.float64]
    snapshot_day: float
    snapshot_counts: npt.NDArray[np.float64]  # (n, len(snapshot_windows))
    snapshot_windows: tuple[int, ...]
    contacts: RecentContacts

    def __len__(self) -> int:
        return len(self.customer_ids)

    @classmethod
    def from_features(
        cls,
        matrix: npt.ArrayLike,
        feature_set: FeatureSet,
        customer_ids: Sequence[str] | npt.NDArray[np.object_],
        as_of: datetime,
        known: npt.ArrayLike | None = None,
        live: Mapping[str, LiveLike] | None = None,
    ) -> CustomerBatch:
        """Build from a snapshot feature matrix (rows = customers) plus the live overlay.

        Args:
            matrix: (n, len(feature_set.columns)) float matrix in the feature set's order.
            feature_set: names the columns (categoricals are codes into its vocabularies).
            customer_ids: the n ids.
            as_of: the snapshot's point in time.
            known: (n,) False for customers absent from the snapshot (their row is ignored).
            live: live state per customer id; customers without an entry have none.
        """
        x = np.asarray(matrix, dtype=np.float64)
        ids = np.asarray(customer_ids, dtype=object).ravel()
        n = len(ids)
        if x.ndim != 2 or x.shape != (n, len(feature_set.features)):
            raise EngineInputError(
                f"matrix: expected shape ({n}, {len(feature_set.features)}) for {n} customer ids "
                f"and feature set {feature_set.key}, got {x.shape}"
            )
        col = _columns(feature_set)
        kn = np.ones(n, dtype=bool) if known is None else np.asarray(known, dtype=bool).ravel()
        if kn.shape != (n,):
            raise EngineInputError(f"known: expected {n} values, got {kn.shape[0]}")
        snap = to_days(as_of)
        x = x[:, col]  # the engine's columns, in _REQUIRED order
        codes = np.where(np.isnan(x[:, :_N_CODES]), -1, x[:, :_N_CODES]).astype(np.int64)
        consent = codes[:, 2:]
        consent[(consent < 0) | (consent > CONSENT_UNKNOWN)] = CONSENT_UNKNOWN
        counts = x[:, _N_CODES + 5 :]
        aov = x[:, _N_CODES + 3]
        batch = cls(
            customer_ids=ids,
            known=kn,
            lapse_state=codes[:, 0],
            value_tier=codes[:, 1],
            consent=consent,
            channels_off=np.zeros((n, len(CHANNELS)), dtype=bool),
            pref_max_contacts=np.full(n, np.nan),
            pref_per_days=np.full(n, np.nan),
            journey_position=np.where(np.isnan(x[:, _N_CODES]), 0, x[:, _N_CODES]).astype(np.int64),
            last_contact_day=snap - x[:, _N_CODES + 1],
            last_order_day=snap - x[:, _N_CODES + 2],
            expected_revenue=aov,
            expected_margin=aov * x[:, _N_CODES + 4],
            snapshot_day=snap,
            snapshot_counts=np.where(np.isnan(counts), 0.0, counts),
            snapshot_windows=CONTACT_WINDOWS,
            contacts=RecentContacts.empty(),
        )
        if live:
            batch._overlay(live)
        return batch

    def _overlay(self, live: Mapping[str, LiveLike]) -> None:
        """Apply the live state in place (only called while building)."""
        cust: list[int] = []
        days: list[float] = []
        chans: list[int] = []
        offers: list[str | None] = []
        for i, cid in enumerate(self.customer_ids):
            state = live.get(cid)
            if state is None:
                continue
            for ch, status in state.consent.items():
                j = _CHANNEL_INDEX.get(ch)
                if j is not None:
                    self.consent[i, j] = (
                        CONSENT_IN
                        if status == OPTED_IN
                        else CONSENT_OUT
                        if status == OPTED_OUT
                        else CONSENT_UNKNOWN
                    )
            prefs = state.preferences
            if prefs is not None:
                if prefs.channels is not None:
                    allowed = set(prefs.channels)
                    self.channels_off[i] = [ch not in allowed for ch in CHANNELS]
                if prefs.max_contacts is not None and prefs.per_days is not None:
                    self.pref_max_contacts[i] = prefs.max_contacts
                    self.pref_per_days[i] = prefs.per_days
            own = [to_days(c.ts) for c in state.contacts]
            for c, d in zip(state.contacts, own, strict=True):
                cust.append(i)
                days.append(d)
                chans.append(_CHANNEL_INDEX.get(c.channel, -1))
                offers.append(c.offer_id)
            if own:
                last = max(own)
                prev = self.last_contact_day[i]
                self.last_contact_day[i] = last if np.isnan(prev) else max(prev, last)
            order = to_days(state.last_order_ts) if state.last_order_ts is not None else None
            if order is not None and order > self.snapshot_day:
                self.last_order_day[i] = order
                self.journey_position[i] = sum(1 for d in own if d > order)
            else:
                self.journey_position[i] += sum(1 for d in own if d > self.snapshot_day)
        if cust:
            object.__setattr__(
                self,
                "contacts",
                RecentContacts(
                    np.array(cust, dtype=np.int64),
                    np.array(days, dtype=np.float64),
                    np.array(chans, dtype=np.int64),
                    np.array(offers, dtype=object),
                ),
            )


_COLUMN_CACHE: dict[int, tuple[FeatureSet, npt.NDArray[np.int64]]] = {}


def _columns(feature_set: FeatureSet) -> npt.NDArray[np.int64]:
    """Positions of `_REQUIRED` in the feature set (cached by identity: hashing a FeatureSet
    costs more than a whole decision)."""
    hit = _COLUMN_CACHE.get(id(feature_set))
    if hit is not None and hit[0] is feature_set:
        return hit[1]
    col = {name: i for i, name in enumerate(feature_set.columns)}
    missing = [name for name in _REQUIRED if name not in col]
    if missing:
        raise EngineInputError(
            f"feature_set: {feature_set.key} lacks column(s) the engine needs: "
            + ", ".join(missing)
        )
    idx = np.array([col[name] for name in _REQUIRED], dtype=np.int64)
    if len(_COLUMN_CACHE) > 32:
        _COLUMN_CACHE.clear()
    _COLUMN_CACHE[id(feature_set)] = (feature_set, idx)
    return idx


def required_columns() -> Iterable[str]:
    """Feature columns the engine reads from a snapshot."""
    return _REQUIRED
