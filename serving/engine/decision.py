"""The engine's output: a columnar `DecisionBatch`, and a per-customer `Decision` view.

Actions: `offer` (an incentive), `message` (a contact without incentive: the plain message
`none` or a content offer), `holdout` (the control group: no contact, recorded as such) and
`none` (no contact now). `Decision` is a plain dataclass; the HTTP schemas in
`serving/schemas.py` are built from it at the API boundary.
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

    @property
    def is_contact(self) -> bool:
        return self.action in (OFFER, MESSAGE)


@dataclass(frozen=True, eq=False)
class DecisionBatch:
    """Decisions for n customers as arrays (see `decision(i)` for one as a `Decision`).

    Attributes:
        action: (n,) one of ACTIONS.
        chosen: (n,) option index, -1 when nothing is sent.
        channel: (n,) channel of the contact, None when nothing is sent.
        stage: (n,) 1-based journey stage of the next step, 0 when unknown or sunset.
        value: (n,) model value of the chosen option (NaN when nothing is sent, or rules-only).
        propensity: (n,) probability the policy gave the chosen action.
        p_convert: (n,) the scorer's P(convert) of the chosen option (NaN when nothing is
            sent, or rules-only).
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
    def offer_id(self) -> npt.NDArray[np.object_]:
        """(n,) chosen offer id, None when nothing is sent."""
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
        excl = self.exclusion[i]
        blocked = np.flatnonzero(excl)
        no_scores = self.rules_only or int(self.choice[i]) in (
            r.CHOICE_CODE[r.UNKNOWN_CUSTOMER],
            r.CHOICE_CODE[r.HOLDOUT_GROUP],
        )
        return Decision(
            customer_id=str(self.customer_ids[i]),
            action=str(self.action[i]),
            offer_id=ids[k] if k >= 0 else None,
            channel=self.channel[i],
            stage=stage or None,
            stage_name=self.stage_names[stage - 1] if stage else None,
            value=None if np.isnan(self.value[i]) else float(self.value[i]),
            propensity=float(self.propensity[i]),
            scores={} if no_scores else dict(zip(ids, self.values[i].tolist(), strict=True)),
            excluded=tuple(Excluded(ids[j], r.EXCLUSION_ORDER[excl[j]]) for j in blocked),
            reasons=self.reasons(i),
            model_version=self.model_version,
            policy_version=self.policy_version,
            p_convert=None if np.isnan(self.p_convert[i]) else float(self.p_convert[i]),
        )

    def decisions(self) -> list[Decision]:
        return [self.decision(i) for i in range(len(self))]
