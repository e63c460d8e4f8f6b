"""A `DecisionBatch` as output columns, read straight from its arrays (no per-row objects).

One row per customer: the decision (action, offer, channel, stage; a holdout row shows what
is sent, i.e. nothing: the contact it replaced is in the decision log), its expected incremental
margin, the predicted conversion probability of a contact and the propensity, the reason codes
(`;`-separated), the model and policy versions, the offer's display fields, the customer's
value tier and lapse state, and the decision id (derived from the wave id and customer id).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from serving.engine import DecisionBatch
from serving.engine import reasons as r

COLUMNS: tuple[str, ...] = (
    "customer_id",
    "decision_id",
    "action",
    "offer_id",
    "channel",
    "stage",
    "stage_name",
    "expected_incremental_margin",
    "p_convert",
    "propensity",
    "reasons",
    "model_version",
    "policy_version",
    "offer_title",
    "offer_description",
    "value_tier",
    "lapse_state",
)
SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("decision_id", pa.string()),
        ("action", pa.string()),
        ("offer_id", pa.string()),
        ("channel", pa.string()),
        ("stage", pa.int64()),
        ("stage_name", pa.string()),
        ("expected_incremental_margin", pa.float64()),
        ("p_convert", pa.float64()),
        ("propensity", pa.float64()),
        ("reasons", pa.string()),
        ("model_version", pa.string()),
        ("policy_version", pa.string()),
        ("offer_title", pa.string()),
        ("offer_description", pa.string()),
        ("value_tier", pa.string()),
        ("lapse_state", pa.string()),
    ]
)
REASON_SEP = ";"
_NAMESPACE = uuid.UUID("6f1c2a52-8d0e-4b8a-9a43-3f3c5d2e7b10")


def wave_decision_ids(wave_id: str, customer_ids: Sequence[str]) -> list[str]:
    """Deterministic decision ids: the same wave and customer always give the same id."""
    return [uuid.uuid5(_NAMESPACE, f"{wave_id}\x1f{cid}").hex for cid in customer_ids]


def reason_strings(result: DecisionBatch) -> npt.NDArray[np.object_]:
    """(n,) reason codes joined by `;` (`model_unavailable;...` in rules-only mode)."""
    names = np.array(r.CHOICE_ORDER, dtype=object)
    if result.rules_only:
        prefixed = np.array(
            [
                n if n in (r.UNKNOWN_CUSTOMER, r.HOLDOUT_GROUP) else f"{r.MODEL_UNAVAILABLE};{n}"
                for n in r.CHOICE_ORDER
            ],
            dtype=object,
        )
        return prefixed[result.choice]
    return names[result.choice]


def _display(result: DecisionBatch, field: str) -> npt.NDArray[np.object_]:
    offers = result.options.offers
    values = [getattr(offers[o], field) if o in offers else None for o in result.options.offer_ids]
    return np.array([*values, None], dtype=object)[np.where(result.sent, result.chosen, -1)]


def decision_table(
    result: DecisionBatch,
    decision_ids: Sequence[str],
    value_tier: npt.NDArray[np.object_] | None = None,
    lapse_state: npt.NDArray[np.object_] | None = None,
) -> pa.Table:
    """The output columns of `result` (see `COLUMNS`); the segments as the decision log
    records them (`serving.decide.Decided`), empty when not given."""
    n = len(result)
    none = np.full(n, None, dtype=object)
    sent = result.sent  # a holdout's replaced contact is not shown: nothing is sent
    p_convert = np.where(sent, result.p_convert, np.nan)
    stage = result.stage
    stage_names = np.array([None, *result.stage_names], dtype=object)
    value = np.where(sent, result.value, np.nan)
    arrays = [
        pa.array(result.customer_ids.astype(str), pa.string()),
        pa.array(decision_ids, pa.string()),
        pa.array(result.action, pa.string()),
        pa.array(result.offer_id, pa.string()),
        pa.array(np.where(sent, result.channel, np.array(None, dtype=object)), pa.string()),
        pa.array(stage, pa.int64(), mask=stage == 0),
        pa.array(stage_names[stage], pa.string()),
        pa.array(value, pa.float64(), mask=np.isnan(value)),
        pa.array(p_convert, pa.float64(), mask=np.isnan(p_convert)),
        pa.array(result.propensity, pa.float64()),
        pa.array(reason_strings(result), pa.string()),
        pa.array(np.full(n, result.model_version, dtype=object), pa.string()),
        pa.array(np.full(n, result.policy_version, dtype=object), pa.string()),
        pa.array(_display(result, "title"), pa.string()),
        pa.array(_display(result, "description"), pa.string()),
        pa.array(value_tier if value_tier is not None else none, pa.string()),
        pa.array(lapse_state if lapse_state is not None else none, pa.string()),
    ]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)
