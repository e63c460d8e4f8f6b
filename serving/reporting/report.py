"""The campaign report as one JSON-able summary, and its JSON and CSV renderings.

`report_summary(store, since, until, campaign)` is what both `winback report` and the API's
`GET /v1/reports/summary` call; `serving.reporting.html` renders the same summary as a page.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, Final

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from serving.reporting import metrics as m
from serving.reporting.errors import ReportError
from serving.reporting.load import ReportFilter, ReportFrames, load_frames
from serving.reporting.stats import MIN_GROUP, Method
from serving.store import Store

FORMATS: Final = ("html", "json", "csv")
SCHEMA_VERSION: Final = 1


@dataclass(frozen=True)
class ReportOptions:
    """How outcomes are attributed and how strict the conclusions are."""

    window_days: int = m.WINDOW_DAYS
    repeat_horizon_days: int = m.REPEAT_HORIZON_DAYS
    min_group: int = MIN_GROUP
    method: Method = "normal"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("window_days", "repeat_horizon_days", "min_group"):
            if getattr(self, name) < 1:
                raise ReportError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.method not in ("normal", "bootstrap"):
            raise ReportError(f"method: must be 'normal' or 'bootstrap', got {self.method!r}")


def jsonable(value: Any) -> Any:
    """`value` with NaN as None, numpy scalars as Python ones and times as ISO strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NaT:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _definitions(o: ReportOptions) -> dict[str, Any]:
    ci = "95% normal approximation (Welch)" if o.method == "normal" else "95% seeded bootstrap"
    return {
        **asdict(o),
        "confidence_interval": ci,
        "contact": "an offer or message decision (dry runs excluded)",
        "holdout": "a holdout decision: the randomized control, which receives nothing",
        "attribution": (
            f"orders, unsubscribes and complaints from the decision until {o.window_days} "
            "days later or the customer's next contact/holdout decision, whichever is first"
        ),
        "net_margin": "order margin minus the incentive cost the order event reports",
        "too_small_rule": (
            f"fewer than {o.min_group} contacts or fewer than {o.min_group} holdouts in a "
            "group: nothing is concluded"
        ),
        "conclusion_rule": "positive/negative only when the whole 95% interval is above/below 0",
        "repeat_purchase": (
            f"another order within {o.repeat_horizon_days} days of the first attributed "
            "order, over reactivations at least that old"
        ),
    }


def build_report(
    frames: ReportFrames,
    report_filter: ReportFilter,
    options: ReportOptions | None = None,
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """The whole report from already loaded frames, as a JSON-able dict."""
    o = options or ReportOptions()
    d, ev = frames.decisions, frames.events
    out = m.attribute_outcomes(d, ev, o.window_days)
    treated = out[out["arm"] == m.TREATED]
    holdout = out[out["arm"] == m.HOLDOUT]
    kw: dict[str, Any] = {"method": o.method, "min_group": o.min_group, "seed": o.seed}
    notes: list[str] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for dim in m.DIMENSIONS:
        if len(treated) and treated[dim].isna().all():
            notes.append(f"{dim}: not recorded for any contact in the decision log")
            continue
        groups[dim] = m.group_table(out, dim, **kw)
    as_of = ev["ts"].max() if len(ev) else None
    calib = m.calibration(out)
    if not calib:
        notes.append(
            "calibration: fewer than 50 contacts carry a logged predicted conversion "
            "(decision log column `p_convert`, filled when a model scored the decision)"
        )
    budget = (
        frames.budget.groupby("offer_id")[["redemptions", "cost"]].sum().reset_index()
        if len(frames.budget)
        else pd.DataFrame(columns=["offer_id", "redemptions", "cost"])
    )
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": (generated_at or datetime.now()).replace(microsecond=0),
        "filters": report_filter.as_dict(),
        "as_of": as_of,
        "definitions": _definitions(o),
        "totals": {
            "decisions": len(d),
            "customers": int(d["customer_id"].nunique()),
            "contacts": len(treated),
            "holdouts": len(holdout),
            "no_contact": int((d["action"] == "none").sum()),
        },
        "overall": {
            "dimension": "overall",
            "group": "all",
            "control": "all holdouts",
            **m.group_row(treated, holdout, **kw),
        },
        "groups": groups,
        "conversion_curve": m.conversion_curve(out, o.window_days).to_dict("records"),
        "repeat_purchase": m.repeat_purchase(out, ev, as_of, o.repeat_horizon_days),
        "guardrail_blocks": m.guardrail_blocks(d),
        "no_contact_reasons": m.no_contact_reasons(d),
        "calibration": calib,
        "budget_usage": budget.to_dict("records"),
        "notes": notes,
    }
    out_: dict[str, Any] = jsonable(summary)
    return out_


def report_summary(
    source: Store | Engine,
    since: datetime | None = None,
    until: datetime | None = None,
    campaign: str | None = None,
    options: ReportOptions | None = None,
) -> dict[str, Any]:
    """Read the store and build the report (JSON-able; for the CLI and the API).

    Raises:
        ReportError: invalid dates or options (names the field).
        StoreError: the store cannot be read.
    """
    f = ReportFilter(since, until, campaign)
    return build_report(load_frames(source, f), f, options)


def group_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The overall row then every group row: the table the CSV output holds."""
    return [summary["overall"], *(r for rows in summary["groups"].values() for r in rows)]


def to_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=False) + "\n"


def to_csv(summary: dict[str, Any]) -> str:
    rows = group_rows(summary)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def render(summary: dict[str, Any], fmt: str) -> str:
    """The summary as `html`, `json` or `csv` text."""
    if fmt == "json":
        return to_json(summary)
    if fmt == "csv":
        return to_csv(summary)
    if fmt == "html":
        from serving.reporting.html import render_html  # matplotlib only when drawing

        return render_html(summary)
    raise ReportError(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
