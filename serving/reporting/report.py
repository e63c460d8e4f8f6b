"""The campaign report as one JSON-able summary, and its JSON and CSV renderings.

`report_summary(store, since, until, campaign)` is what both `winback report` and the API's
`GET /v1/reports/summary` call; `serving.reporting.html` renders the same summary as a page.

The headline figures sit under stable top-level keys, `incremental_margin_per_contact` and
`incremental_conversion`, each with `estimate`, `ci_low`, `ci_high` (95%, clustered by
customer), `n_contacted` and `n_control`; `comparison` says in words what was compared.
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
from serving.reporting.stats import MIN_GROUP, Difference, Method
from serving.store import Store

FORMATS: Final = ("html", "json", "csv")
SCHEMA_VERSION: Final = 2
HEADLINE_KEYS: Final = ("incremental_margin_per_contact", "incremental_conversion")
FAIR_COMPARISON: Final = (
    "contacted customers against held-out would-be contacts: the holdout is drawn (stable "
    "hash of the customer id) only among customers whose decision was a contact after every "
    "guardrail, and each holdout counts in the slice (offer, channel, stage, segment, "
    "campaign) of the contact it replaced"
)
LEGACY_COMPARISON: Final = (
    "contacted customers against every holdout: these holdouts record no replaced contact "
    "(written before store revision 0004, drawn among all known customers), so the control "
    "may include customers who would never have been contacted and the difference is not a "
    "fair estimate of what the contacts earned"
)


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
    floor = (
        "each arm's variance floored at the pooled variance of both arms, Student-t quantile "
        "with min(customers per arm) - 1 degrees of freedom (a small holdout of mostly-zero "
        "margins otherwise gives intervals that are far too narrow)"
    )
    ci = (
        f"95%, clustered by customer (cluster-robust standard error); {floor}"
        if o.method == "normal"
        else f"95% seeded bootstrap resampling decisions, widened to at least the normal "
        f"interval ({floor})"
    )
    return {
        **asdict(o),
        "confidence_interval": ci,
        "contact": "an offer or message decision (dry runs excluded)",
        "holdout": (
            "a holdout decision: the randomized control, which receives nothing; drawn only "
            "among customers a contact was due to, it records the contact it replaced"
        ),
        "intention_to_treat": (
            "per customer: every customer the programme meant to contact, in the arm of their "
            "assignment (contacts reported not_sent stay treated), all their outcomes summed"
        ),
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
    attributed = m.attribute_outcomes(d, ev, o.window_days)
    treated = attributed[attributed["arm"] == m.TREATED]
    holdout, comparison, notes = _control(attributed[attributed["arm"] == m.HOLDOUT])
    out = pd.concat([treated, holdout], ignore_index=True)
    kw: dict[str, Any] = {"method": o.method, "min_group": o.min_group, "seed": o.seed}
    reported = m.reported_types(ev)
    for col, etype in (("delivered", "delivery"), ("opened", "open"), ("clicked", "click")):
        if col not in reported:
            notes.append(f"{etype} events: none reported, so {etype} figures are not reported")
    groups: dict[str, list[dict[str, Any]]] = {}
    for dim in m.DIMENSIONS:
        if len(treated) and treated[dim].isna().all():
            notes.append(f"{dim}: not recorded for any contact in the decision log")
            continue
        groups[dim] = m.group_table(out, dim, reported=reported, **kw)
    repeat = int((out.groupby("customer_id")["wave"].nunique() > 1).sum()) if len(out) else 0
    if repeat:
        notes.append(
            f"repeat waves: {repeat} customers were decided for in more than one wave. The "
            "holdout is stable per customer, so from a customer's second wave on the contacted "
            "and the held-out have different histories (customers an earlier contact won back "
            "leave the contacted pool; the held-out keep theirs): per-contact figures of later "
            "waves lean low (measured on played worlds in bench/README.md); the first wave's "
            "figures do not"
        )
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
    conv, margin = m.group_differences(treated, holdout, **kw)
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": (generated_at or datetime.now()).replace(microsecond=0),
        "filters": report_filter.as_dict(),
        "as_of": as_of,
        "comparison": comparison,
        "incremental_margin_per_contact": _headline(margin),
        "incremental_conversion": _headline(conv),
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
            "control": "held-out would-be contacts"
            if comparison == FAIR_COMPARISON
            else "all holdouts",
            **m.group_row(treated, holdout, reported=reported, **kw),
        },
        "intention_to_treat": m.intention_to_treat(out, **kw),
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


def _headline(diff: Difference) -> dict[str, Any]:
    return {
        "estimate": diff.estimate,
        "ci_low": diff.ci_low,
        "ci_high": diff.ci_high,
        "n_contacted": diff.n_treated,
        "n_control": diff.n_holdout,
        "conclusion": diff.conclusion,
    }


def _control(holdouts: pd.DataFrame) -> tuple[pd.DataFrame, str, list[str]]:
    """(the control rows, what the comparison is, notes): held-out would-be contacts (rows
    that record the contact they replaced), else, when there are none, every holdout."""
    fair = holdouts[holdouts["offer_id"].notna()]
    notes: list[str] = []
    if len(fair):
        if len(fair) < len(holdouts):
            notes.append(
                f"control: {len(holdouts) - len(fair)} holdouts recording no replaced contact "
                "(written before store revision 0004) are left out of every comparison"
            )
        return fair, FAIR_COMPARISON, notes
    if len(holdouts):
        notes.append(f"control: {LEGACY_COMPARISON}")
    return holdouts, LEGACY_COMPARISON, notes


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


def to_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=False) + "\n"


def to_csv(summary: dict[str, Any]) -> str:
    rows = m.group_rows(summary)
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
