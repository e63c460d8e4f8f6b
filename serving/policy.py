"""The business policy (`policy.yaml`): journey, frequency caps, margin floor, eligibility,
holdout and exploration.

The file is validated at load time against the pydantic models below (unknown keys are an
error) and versioned by the sha256 of its bytes, so every decision can name the exact policy it
was made under. `policy.example.yaml` at the repository root documents every key.

Offer budgets live with the offers in `offers.yaml` (`features.offers`); the policy only holds
global defaults for offers that state no budget of their own.

The holdout assignment is a pure function of (salt, customer id): the same customer is in or
out of the control group in every process, on every machine and after every restart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.constants import CHANNELS, VALUE_TIERS
from features.offers import Budget, Channel, OfferType, ValueTier, format_pydantic_error
from serving.errors import PolicyError

LapseState = Literal["active", "at_risk", "lapsed", "churned"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique(values: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} '{v}' appears more than once")
        seen.add(v)


class Stage(_Strict):
    """One step of the win-back sequence."""

    name: str = Field(min_length=1, max_length=64)
    offer_types: tuple[OfferType, ...] = Field(min_length=1)
    min_days_since_previous: int = Field(ge=0)
    description: str = ""

    @model_validator(mode="after")
    def _distinct_types(self) -> Stage:
        _unique(self.offer_types, "offer type")
        return self


class Journey(_Strict):
    """Ordered stages; the stage advances only after a step that got no purchase."""

    stages: tuple[Stage, ...] = Field(min_length=1)
    sunset_days: int = Field(ge=0, description="no win-back contact this long after the last")

    @model_validator(mode="after")
    def _distinct_names(self) -> Journey:
        _unique((s.name for s in self.stages), "stage name")
        return self

    def stage_number(self, name: str) -> int:
        """1-based position of the stage called `name` (KeyError if unknown)."""
        for i, s in enumerate(self.stages, start=1):
            if s.name == name:
                return i
        raise KeyError(name)


class Window(_Strict):
    """At most `max_contacts` contacts in any `days` consecutive days."""

    max_contacts: int = Field(ge=1)
    days: int = Field(ge=1)


class FrequencyCaps(_Strict):
    """Contact pressure limits; a customer's own preferences can only tighten them."""

    across_channels: tuple[Window, ...] = ()
    per_channel: dict[Channel, tuple[Window, ...]] = Field(default_factory=dict)
    min_gap_hours: float = Field(0.0, ge=0.0, description="minimum time between two contacts")
    no_repeat_offer_days: int = Field(0, ge=0, description="same offer not again within")


class MarginFloor(_Strict):
    """An incentive must leave expected margin >= both floors after its expected cost."""

    absolute: float = Field(0.0, ge=0.0, description="currency per order")
    share_of_revenue: float = Field(0.0, ge=0.0, le=1.0, description="of expected revenue")

    def floor(self, expected_revenue: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The binding floor (the larger of the two) for each expected revenue."""
        rev = np.asarray(expected_revenue, dtype=np.float64)
        return np.maximum(self.absolute, self.share_of_revenue * rev)


class Eligibility(_Strict):
    """Who may be contacted at all, and on which channels."""

    value_tiers: tuple[ValueTier, ...] = Field(default=VALUE_TIERS, min_length=1)
    lapse_states: tuple[LapseState, ...] = Field(default=("at_risk", "lapsed"), min_length=1)
    channels: tuple[Channel, ...] = Field(default=CHANNELS, min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> Eligibility:
        _unique(self.value_tiers, "value tier")
        _unique(self.lapse_states, "lapse state")
        _unique(self.channels, "channel")
        return self


class Holdout(_Strict):
    """A deterministic random control group that receives no contact."""

    share: float = Field(ge=0.0, lt=1.0)
    salt: str = Field(min_length=1, description="change it to draw a new control group")


class Exploration(_Strict):
    """Epsilon-greedy exploration over the eligible options of one decision.

    `among: allowed` (the default): a share `epsilon` of the probability mass is spread evenly
    over the k eligible options, so each has probability at least epsilon / k; the rest goes
    to the best option. `among: positive`: `floor` of it is spread over every eligible option
    (each keeps a probability of at least floor / k, so a policy choosing any of them can still
    be evaluated off-policy) and the rest of epsilon only over the options the model values
    above no contact; options it expects to lose money get the floor alone. Rules-only
    decisions value every option positively, so for them both are the same.
    """

    epsilon: float = Field(0.0, ge=0.0, le=1.0)
    among: Literal["allowed", "positive"] = "allowed"
    floor: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _floor_within_epsilon(self) -> Exploration:
        if self.floor > self.epsilon:
            raise ValueError(f"exploration.floor: {self.floor} is above epsilon {self.epsilon}")
        if self.floor > 0 and self.among == "allowed":
            raise ValueError("exploration.floor: only with among: positive")
        return self


class Policy(_Strict):
    """The whole validated policy; `version` is `sha256:<12 hex>` of the file bytes."""

    version: str = ""
    journey: Journey
    frequency: FrequencyCaps = FrequencyCaps()
    margin_floor: MarginFloor = MarginFloor()
    eligibility: Eligibility = Eligibility()
    offer_budget_defaults: Budget | None = None
    holdout: Holdout
    exploration: Exploration = Exploration()
    channel_preference: tuple[Channel, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _channels(self) -> Policy:
        _unique(self.channel_preference, "channel")
        return self

    def auto_channels(self) -> tuple[Channel, ...]:
        """Channels tried for `channel=auto`, best first, restricted to eligible channels."""
        return tuple(c for c in self.channel_preference if c in self.eligibility.channels)

    def holdout_mask(self, customer_ids: np.ndarray | list[str]) -> npt.NDArray[np.bool_]:
        """`in_holdout` with this policy's salt and share."""
        return in_holdout(customer_ids, self.holdout.salt, self.holdout.share)


def policy_version(data: bytes) -> str:
    """Short content hash of a policy file: `sha256:` and the first 12 hex digits."""
    return f"sha256:{hashlib.sha256(data).hexdigest()[:12]}"


def parse_policy(data: bytes | str, source: str = "policy.yaml") -> Policy:
    """Parse and validate policy YAML. Raises PolicyError naming each key and its problem."""
    raw_bytes = data.encode("utf-8") if isinstance(data, str) else data
    try:
        raw = yaml.safe_load(raw_bytes)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: expected a mapping with 'journey', 'holdout', ... keys")
    if "version" in raw:
        raise PolicyError(f"{source}: version: is computed from the file content; remove it")
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(format_pydantic_error(source, exc)) from None
    return policy.model_copy(update={"version": policy_version(raw_bytes)})


def load_policy(path: Path | str) -> Policy:
    """Read and validate a policy file (see `policy.example.yaml`)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read policy file: {exc.strerror}") from None
    return parse_policy(data, source=str(p))


_HASH_SCALE = float(2**64)


def holdout_scores(customer_ids: np.ndarray | list[str], salt: str) -> npt.NDArray[np.float64]:
    """A uniform number in [0, 1) per customer, a stable function of (salt, id).

    blake2b over `salt`, a NUL separator and the id (so that "ab"+"c" and "a"+"bc" differ);
    never Python's `hash()`, which is salted per process.
    """
    prefix = salt.encode("utf-8") + b"\x00"
    ids = np.asarray(customer_ids, dtype=object).ravel()
    out = np.empty(len(ids), dtype=np.float64)
    for i, cid in enumerate(ids):
        digest = hashlib.blake2b(prefix + str(cid).encode("utf-8"), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / _HASH_SCALE
    return out


def in_holdout(
    customer_ids: np.ndarray | list[str], salt: str, share: float
) -> npt.NDArray[np.bool_]:
    """Whether each customer belongs to the holdout group of `share` under `salt`.

    Deterministic across processes and machines; raising `share` only adds customers (the
    group for a smaller share is a subset of the group for a larger one).
    """
    if not 0.0 <= share <= 1.0:
        raise PolicyError(f"holdout.share: must be between 0 and 1, got {share}")
    return holdout_scores(customer_ids, salt) < share
