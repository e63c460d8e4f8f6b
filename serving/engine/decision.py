"""The engine's output: a columnar `DecisionBatch`, and a per-customer `Decision` view.

Actions: `offer` (an incentive), `message` (a contact without incentive: the plain message
`none` or a content offer), `holdout` (the control group: a customer who would have been
contacted, after every guardrail, but is not; the decision it replaced is kept in
`Decision.replaced`) and `none` (no contact now). `Decision` is a plain dataclass; the HTTP
schemas in `serving/schemas.py` are built from it at the API boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from serving.engine import reasons as r
from serving.engine.options import OptionSet

OFFER, MESSAGE, HOLDOUT, NONE = "offer", "message", "holdout", "none"
ACTIONS = (OFFER, MESSAGE, HOLDOUT, NONE)
RULES_ONLY = "rules-only"


@dataclass(frozen=True)
class Excluded:
    """An option that a guardrail blocked, and the code of the first rule that did."""

    offer_id: str
    reason: str


@dataclass(frozen=True)
class Replaced:
    """The contact a holdout decision replaced: what would have been sent, and how surely.

    `propensity` is the probability the policy gave that option (given not held out);
    `value` and `p_convert` are the model's (None in rules-only mode).
    """

    offer_id: str
    channel: str
    value: float | None
    propensity: float
    p_convert: float | None


@dataclass(frozen=True)
class Decision:
    """One customer's decision, with everything needed to audit it."""

    customer_id: str
    action: str
    offer_id: str | None
    channel: str | None
    stage: int | None
    stage_name: str | None
    value: float | None
    propensity: float
    scores: dict[str, float]
    excluded: tuple[Excluded, ...]
    reasons: tuple[str, ...]
    model_version: str
    policy_version: str
    p_convert: float | None = None  # the model's P(convert) of the chosen option, if scored
    replaced: Replaced | None = None  # for a holdout: the contact it replaced

    @property
    def is_contact(self) -> bool:
        return self.action in (OFFER, MESSAGE)


@dataclass(frozen=True, eq=False)
class DecisionBatch:
    """Decisions for n customers as arrays (see `decision(i)` for one as a `Decision`).

    Attributes:
        action: (n,) one of ACTIONS.
        chosen: (n,) option index, -1 when no contact would be made; for a holdout, the
            option it replaced (see `offer_id` for what is sent).
        channel: (n,) channel of the contact (a holdout: the replaced one), None otherwise.
        stage: (n,) 1-based journey stage of the next step, 0 when unknown or sunset.
        value: (n,) model value of the chosen option (NaN when no contact would be made, or
            rules-only).
        propensity: (n,) probability the policy gave the action taken (a holdout: the share).
        option_propensity: (n,) probability of the chosen option given not held out (a
            holdout: of the option it replaced).
        p_convert: (n,) the scorer's P(convert) of the chosen option (NaN when no contact
            would be made, or rules-only).
        values: (n, K) option values (model values, or rules-only preference scores, which
            `Decision` does not report: they are an order, not money).
        exclusion: (n, K) reason code per option (0 = allowed), see reasons.EXCLUSION_ORDER.
        choice: (n,) choice code, see reasons.CHOICE_ORDER.
    """

    customer_ids: npt.NDArray[np.object_]
    options: OptionSet
    stage_names: tuple[str, ...]
    action: npt.NDArray[np.object_]
    chosen: npt.NDArray[np.int64]
    channel: npt.NDArray[np.object_]
    stage: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    propensity: npt.NDArray[np.float64]
    option_propensity: npt.NDArray[np.float64]
    p_convert: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    exclusion: npt.NDArray[np.int64]
    choice: npt.NDArray[np.int64]
    rules_only: bool
    model_version: str
    policy_version: str

    def __len__(self) -> int:
        return len(self.customer_ids)

    @property
    def sent(self) -> npt.NDArray[np.bool_]:
        """(n,) whether a contact is sent (`offer` or `message`)."""
        return np.isin(self.action, (OFFER, MESSAGE))

    @property
    def held_out(self) -> npt.NDArray[np.bool_]:
        """(n,) whether the customer is held out (a contact was replaced by nothing)."""
        return np.asarray(self.action == HOLDOUT, dtype=bool)

    @property
    def offer_id(self) -> npt.NDArray[np.object_]:
        """(n,) offer id sent, None when nothing is sent (holdouts included)."""
        ids = np.array([*self.options.offer_ids, None], dtype=object)
        return ids[np.where(self.sent, self.chosen, -1)]

    @property
    def would_offer_id(self) -> npt.NDArray[np.object_]:
        """(n,) offer id sent or, for a holdout, replaced; None when no contact would be made."""
        ids = np.array([*self.options.offer_ids, None], dtype=object)
        return ids[self.chosen]

    def reasons(self, i: int) -> tuple[str, ...]:
        """Reason codes of customer i's choice (model_unavailable first in rules-only mode)."""
        code = r.CHOICE_ORDER[int(self.choice[i])]
        if self.rules_only and code not in (r.UNKNOWN_CUSTOMER, r.HOLDOUT_GROUP):
            return (r.MODEL_UNAVAILABLE, code)
        return (code,)

    def decision(self, i: int) -> Decision:
        """Customer i's decision as a `Decision`."""
        k = int(self.chosen[i])
        ids = self.options.offer_ids
        stage = int(self.stage[i])
        choice = int(self.choice[i])
        no_scores = self.rules_only or choice == r.CHOICE_CODE[r.UNKNOWN_CUSTOMER]
        action = str(self.action[i])
        value = _none_if_nan(float(self.value[i]))
        p_convert = _none_if_nan(float(self.p_convert[i]))
        channel = self.channel[i]
        replaced = None
        if action == HOLDOUT and k >= 0:
            replaced = Replaced(
                ids[k], str(channel), value, float(self.option_propensity[i]), p_convert
            )
        shown = action in (OFFER, MESSAGE)
        return Decision(
            customer_id=str(self.customer_ids[i]),
            action=action,
            offer_id=ids[k] if shown else None,
            channel=channel if shown else None,
            stage=stage or None,
            stage_name=self.stage_names[stage - 1] if stage else None,
            value=value if shown else None,
            propensity=float(self.propensity[i]),
            scores={} if no_scores else dict(zip(ids, self.values[i].tolist(), strict=True)),
            excluded=_excluded(ids, self.exclusion[i]),
            reasons=self.reasons(i),
            model_version=self.model_version,
            policy_version=self.policy_version,
            p_convert=p_convert if shown else None,
            replaced=replaced,
        )

    def decisions(self) -> list[Decision]:
        return [self.decision(i) for i in range(len(self))]


def _none_if_nan(x: float) -> float | None:
    """None for NaN (the engine's "no value"), else the value."""
    return None if x != x else x


EXCLUDED_KEPT = 4096
"""Most exclusion patterns whose `Excluded` tuples are kept (`_excluded`)."""

_excluded_of: dict[tuple[tuple[str, ...], str, bytes], tuple[Excluded, ...]] = {}


def _excluded(ids: tuple[str, ...], row: npt.NDArray[np.int64]) -> tuple[Excluded, ...]:
    """The options a customer's exclusion row blocks (a rule code per option, 0: allowed).

    Customers share a few patterns (32 in 129,069 decisions of the bench's world), so the
    tuples, immutable, are kept by pattern, up to `EXCLUDED_KEPT` of them: building eight
    `Excluded` per decision was about a tenth of turning an engine row into a `Decision`."""
    key = (ids, row.dtype.str, row.tobytes())
    found = _excluded_of.get(key)
    if found is None:
        found = tuple(Excluded(ids[j], r.EXCLUSION_ORDER[row[j]]) for j in np.flatnonzero(row))
        if len(_excluded_of) < EXCLUDED_KEPT:
            _excluded_of[key] = found
    return found
