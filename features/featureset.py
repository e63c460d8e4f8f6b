"""The feature declarations and the named, versioned feature sets `winback_v1` and `winback_v2`.

`winback_v2` (the default) is `winback_v1` plus two kinds of columns v1 lacked: order economics
at full price (an offer's cost applies to the price before discounts, while v1's average order
value and margin rate are as paid, lowered by a customer's habitual discounts) and friction
counted over the whole history (v1 counts the last 90 and 365 days only, which says nothing
about a customer lapsed for longer).

Every feature states its name, dtype, lookback and meaning once, here. A `FeatureSet` is the
ordered list of those declarations; its column order and vocabularies are data
(`to_json` / `from_json`) stored with every model and every serving snapshot, so training,
batch scoring and the API agree on what column *i* means.

Every feature is numeric (`float64`) so models and the API consume one numpy matrix.
Categorical features hold integer codes ``0..k-1`` into their declared `vocabulary`; a value
outside the vocabulary, or a missing value (e.g. the lapse state of a customer who never
ordered), is ``NaN``, which LightGBM treats as missing. Consent is never missing: a channel
without any consent record before the as-of time has the explicit state ``unknown``.

`favourite_category` is the one vocabulary that depends on the data (shop categories differ);
`winback_v1` declares it empty and `FeatureSet.with_vocabulary` freezes it from the data before
a model is trained; the frozen set is what gets stored.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from features import constants as c
from features.errors import FeaturesError

Dtype = Literal["float64", "category"]

CONSENT_STATES: tuple[str, ...] = (c.OPTED_IN, c.OPTED_OUT, "unknown")
UNKNOWN_CONSENT = "unknown"

# Windows, in days, used by the windowed families.
RFM_WINDOWS: tuple[int, ...] = (30, 90, 180, 365)
FRICTION_WINDOWS: tuple[int, ...] = (90, 365)
ENGAGEMENT_WINDOWS: tuple[int, ...] = (30, 90)
CONTACT_WINDOWS: tuple[int, ...] = (7, 30, 90)
FRICTION_EVENTS: dict[str, str] = {
    "delivery_issue": "delivery_issues",
    "stockout": "stockouts",
    "support_ticket": "support_tickets",
    "complaint": "complaints",
}
ENGAGEMENT_EVENTS: dict[str, str] = {"open": "opens", "click": "clicks", "visit": "visits"}


@dataclass(frozen=True)
class Feature:
    """One feature: its column name, dtype, lookback window and what it means."""

    name: str
    dtype: Dtype
    lookback: str
    meaning: str
    vocabulary: tuple[str, ...] = ()

    @property
    def is_categorical(self) -> bool:
        return self.dtype == "category"


def _num(name: str, lookback: str, meaning: str) -> Feature:
    return Feature(name, "float64", lookback, meaning)


def _cat(name: str, lookback: str, meaning: str, vocabulary: tuple[str, ...]) -> Feature:
    return Feature(name, "category", lookback, meaning, vocabulary)


def _declarations() -> tuple[Feature, ...]:
    f: list[Feature] = [
        _num("tenure_days", "lifetime", "days from signup to the as-of time"),
        _num("days_since_last_order", "lifetime", "days since the last order; NaN if none"),
        _num("days_since_first_order", "lifetime", "days since the first order; NaN if none"),
    ]
    for w in RFM_WINDOWS:
        f.append(_num(f"orders_{w}d", f"{w}d", f"orders in the last {w} days"))
    f.append(_num("orders_lifetime", "lifetime", "orders before the as-of time"))
    for w in RFM_WINDOWS:
        f.append(_num(f"revenue_{w}d", f"{w}d", f"revenue of orders in the last {w} days"))
    f += [
        _num("revenue_lifetime", "lifetime", "revenue of all orders"),
        _num("margin_365d", "365d", "margin of orders in the last 365 days"),
        _num("margin_lifetime", "lifetime", "margin of all orders"),
        _num("aov_lifetime", "lifetime", "average order value; NaN without orders"),
        _num("margin_rate_lifetime", "lifetime", "margin / revenue; NaN if revenue is 0"),
        _num("gap_mean_days", "lifetime", "mean days between orders; NaN under 2 orders"),
        _num("gap_std_days", "lifetime", "population std of the gaps; NaN under 3 orders"),
        _num("overdue_ratio", "lifetime", "days since last order / mean gap; NaN if no gap"),
        _cat("lapse_state", "lifetime", "recency state from configured thresholds", c.LAPSE_STATES),
        _cat("value_tier", "lifetime", "tier from lifetime revenue thresholds", c.VALUE_TIERS),
        _cat("favourite_category", "lifetime", "category with the most spend", ()),
        _num("top_category_share", "lifetime", "share of spend in the favourite category"),
        _num("n_categories", "lifetime", "distinct categories ordered"),
        _num("discount_order_share", "lifetime", "share of orders with a discount"),
    ]
    for event, stem in FRICTION_EVENTS.items():
        for w in FRICTION_WINDOWS:
            f.append(_num(f"{stem}_{w}d", f"{w}d", f"'{event}' events in the last {w} days"))
    for event, stem in ENGAGEMENT_EVENTS.items():
        for w in ENGAGEMENT_WINDOWS:
            f.append(_num(f"{stem}_{w}d", f"{w}d", f"'{event}' events in the last {w} days"))
    for w in CONTACT_WINDOWS:
        f.append(_num(f"contacts_{w}d", f"{w}d", f"contacts sent (holdouts excluded), last {w}d"))
    f += [
        _num("days_since_last_contact", "lifetime", "days since the last contact; NaN if none"),
        _num("journey_stage", "lifetime", "contacts since the last order (0 = not in a journey)"),
        _cat("last_offer_type", "lifetime", "offer type of the last contact", c.OFFER_TYPES),
        _num(
            "last_contact_responded",
            "lifetime",
            "1 if the last contact got an open, click, "
            "visit or order before the as-of time, 0 if not, NaN if never contacted",
        ),
    ]
    for ch in c.CHANNELS:
        f.append(_cat(f"consent_{ch}", "lifetime", f"latest consent on {ch}", CONSENT_STATES))
    return tuple(f)


@dataclass(frozen=True)
class FeatureSet:
    """A named, versioned, ordered list of features."""

    name: str
    version: str
    features: tuple[Feature, ...]

    @property
    def key(self) -> str:
        """`name@version`, the identifier stored with models and snapshots."""
        return f"{self.name}@{self.version}"

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def categorical_columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.is_categorical)

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def with_vocabulary(self, name: str, vocabulary: tuple[str, ...]) -> FeatureSet:
        """A copy in which categorical feature `name` has `vocabulary` (frozen before training)."""
        feats = tuple(
            replace(f, vocabulary=tuple(vocabulary)) if f.name == name else f for f in self.features
        )
        if name not in self.columns or not self.feature(name).is_categorical:
            raise FeaturesError(f"feature set {self.key}: '{name}' is not a categorical feature")
        return replace(self, features=feats)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureSet:
        try:
            feats = tuple(
                Feature(
                    name=f["name"],
                    dtype=f["dtype"],
                    lookback=f["lookback"],
                    meaning=f["meaning"],
                    vocabulary=tuple(f.get("vocabulary", ())),
                )
                for f in raw["features"]
            )
            return cls(name=raw["name"], version=raw["version"], features=feats)
        except (KeyError, TypeError) as exc:
            raise FeaturesError(f"invalid feature set description: missing {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> FeatureSet:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FeaturesError(f"invalid feature set JSON: {exc}") from None
        return cls.from_dict(raw)


WINBACK_V1 = FeatureSet(name="winback_v1", version="1", features=_declarations())

WINBACK_V2 = FeatureSet(
    name="winback_v2",
    version="1",
    features=(
        *WINBACK_V1.features,
        _num("order_days_lifetime", "lifetime", "distinct days (UTC) with an order"),
        _num("aov_gross_lifetime", "lifetime", "average order value before discounts"),
        _num(
            "margin_rate_gross_lifetime",
            "lifetime",
            "(margin + discounts) / (revenue + discounts): the margin rate at full price",
        ),
        *(
            _num(f"{stem}_lifetime", "lifetime", f"'{event}' events before the as-of time")
            for event, stem in FRICTION_EVENTS.items()
        ),
    ),
)

FEATURE_SETS: dict[str, FeatureSet] = {fs.name: fs for fs in (WINBACK_V1, WINBACK_V2)}

DEFAULT_FEATURE_SET = WINBACK_V2
"""What `build`, `winback features` and training compute unless told otherwise. A model keeps
the feature set it was trained on (serving computes that one), so older models still work."""


def get_feature_set(name: str = DEFAULT_FEATURE_SET.name) -> FeatureSet:
    """A declared feature set by name; unknown names are a FeaturesError listing the known."""
    try:
        return FEATURE_SETS[name]
    except KeyError:
        known = ", ".join(sorted(FEATURE_SETS))
        raise FeaturesError(f"unknown feature set '{name}' (known: {known})") from None
