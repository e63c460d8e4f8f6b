"""The offer catalog (`offers.yaml`): what we can send, what it costs, who may get it.

The reserved ids `none` (a message without incentive) and `holdout` (a randomized control that
got nothing) are options of every decision but never catalog entries.
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.constants import CHANNELS, RESERVED_OFFER_IDS, VALUE_TIERS
from features.errors import OfferCatalogError

OfferType = Literal[
    "percent_discount",
    "amount_discount",
    "free_shipping",
    "bundle",
    "extended_warranty",
    "expert_consult",
    "content",
    "none",
]
Channel = Literal["email", "sms", "push", "in_app", "direct_mail"]
ValueTier = Literal["occasional", "mid", "high"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CostModel(_Strict):
    """What an offer costs us when it is redeemed on an order."""

    revenue_fraction: float = Field(0.0, ge=0.0, le=1.0, description="share of order revenue")
    fixed: float = Field(0.0, ge=0.0, description="fixed amount per redemption, in currency")

    def expected_cost(self, order_revenue: float) -> float:
        """Cost of one redemption on an order of `order_revenue`."""
        return self.revenue_fraction * order_revenue + self.fixed


class Budget(_Strict):
    """Optional spending limits of an offer; any subset may be set."""

    max_redemptions: int | None = Field(None, gt=0)
    max_cost: float | None = Field(None, gt=0)
    max_redemptions_per_day: int | None = Field(None, gt=0)
    max_cost_per_day: float | None = Field(None, gt=0)


class Offer(_Strict):
    """One entry of the catalog."""

    offer_id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    type: OfferType
    value: float = Field(0.0, ge=0.0, description="percent for percent_discount, else currency")
    cost: CostModel = CostModel()
    channels: tuple[Channel, ...] = Field(default=CHANNELS, min_length=1)
    min_value_tier: ValueTier = "occasional"
    max_value_tier: ValueTier = "high"
    valid_from: date | None = None
    valid_to: date | None = None
    budget: Budget | None = None
    title: str = Field(min_length=1)
    description: str = ""

    @field_validator("offer_id")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in RESERVED_OFFER_IDS:
            raise ValueError(f"'{v}' is reserved (built-in option), choose another id")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> Offer:
        if VALUE_TIERS.index(self.min_value_tier) > VALUE_TIERS.index(self.max_value_tier):
            raise ValueError("min_value_tier is above max_value_tier")
        if self.valid_from and self.valid_to and self.valid_from > self.valid_to:
            raise ValueError("valid_from is after valid_to")
        if self.type == "percent_discount" and self.value > 100:
            raise ValueError("value of a percent_discount must be at most 100")
        return self

    @property
    def is_incentive(self) -> bool:
        """Whether the offer gives something of value (and so costs margin)."""
        return self.type not in ("content", "none")


class OfferCatalog(_Strict):
    """The validated catalog, versioned by `version` or else by a hash of its content."""

    version: str = ""
    offers: tuple[Offer, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> OfferCatalog:
        seen: set[str] = set()
        for o in self.offers:
            if o.offer_id in seen:
                raise ValueError(f"offer_id '{o.offer_id}' appears more than once")
            seen.add(o.offer_id)
        return self

    @property
    def offer_ids(self) -> tuple[str, ...]:
        return tuple(o.offer_id for o in self.offers)

    def get(self, offer_id: str) -> Offer:
        for o in self.offers:
            if o.offer_id == offer_id:
                return o
        raise KeyError(offer_id)


def format_pydantic_error(source: str, err: ValidationError) -> str:
    """One line per problem: `source: offers[2].cost.fixed: Input should be ...`."""
    lines = []
    for e in err.errors():
        loc = ""
        for part in e["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        lines.append(f"{source}: {loc or '(top level)'}: {e['msg']}")
    return "\n".join(lines)


def parse_catalog(text: str, source: str = "offers.yaml") -> OfferCatalog:
    """Parse and validate catalog YAML text. Raises OfferCatalogError naming key and problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise OfferCatalogError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise OfferCatalogError(f"{source}: expected a mapping with an 'offers' list")
    try:
        catalog = OfferCatalog.model_validate(raw)
    except ValidationError as exc:
        raise OfferCatalogError(format_pydantic_error(source, exc)) from None
    if not catalog.version:
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        catalog = catalog.model_copy(update={"version": f"sha256:{digest}"})
    return catalog


def load_catalog(path: Path) -> OfferCatalog:
    """Read and validate an offers.yaml file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OfferCatalogError(f"{path}: cannot read offer catalog: {exc.strerror}") from None
    return parse_catalog(text, source=str(path))


def dump_catalog(catalog: OfferCatalog) -> str:
    """YAML text of a catalog, readable back by `parse_catalog`."""
    data = catalog.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
