"""The campaign report as one self-contained HTML page (inline SVG charts, no external URL).

Charts are drawn with matplotlib's object API (`Figure`, no pyplot, no global backend) and
embedded as SVG text, so the file opens offline and can be mailed as is.
"""

from __future__ import annotations

import io
import re
from html import escape
from typing import Any, Final

from matplotlib import rc_context
from matplotlib.figure import Figure

from serving.reporting.metrics import group_rows

COLORS: Final = {
    "positive": "#1a9850",
    "negative": "#d73027",
    "inconclusive": "#7f7f7f",
    "too_small": "#c7c7c7",
}
TREATED_COLOR: Final = "#2166ac"
HOLDOUT_COLOR: Final = "#b2182b"
MAX_LIFT_ROWS: Final = 40
DIM_LABELS: Final = {
    "campaign_id": "Campaign",
    "wave": "Wave",
    "offer_id": "Offer",
    "channel": "Channel",
    "stage": "Stage",
    "value_tier": "Value tier",
    "lapse_state": "Lapse state",
}
_SVG_START = re.compile(r"<svg\b")
_METADATA = re.compile(r"<metadata>.*?</metadata>", re.S)


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    with rc_context({"svg.hashsalt": "winback", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    start = _SVG_START.search(text)
    text = text[start.start() :] if start else text  # drop the XML prolog and DOCTYPE
    return _METADATA.sub("", text)


def _f(v: Any, kind: str = "num") -> str:
    if v is None:
        return "–"
    if kind == "pct":
        return f"{v * 100:.1f}%"
    if kind == "pp":
        return f"{v * 100:+.1f} pp"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "money":
        return f"{v:,.2f}"
    return f"{v:,.2f}" if isinstance(v, float) else escape(str(v))


def lift_chart(summary: dict[str, Any]) -> str:
    """Incremental conversion (pp) and net margin per contact, with 95% error bars."""
    rows = [r for r in group_rows(summary) if r["dimension"] != "wave"][:MAX_LIFT_ROWS]
    labels = [
        "All contacts"
        if r["dimension"] == "overall"
        else f"{DIM_LABELS.get(r['dimension'], r['dimension'])}: {r['group']}"
        for r in rows
    ]
    fig = Figure(figsize=(10, 0.42 * len(rows) + 1.6))
    axes = fig.subplots(1, 2, sharey=True)
    panels = (
        ("incremental_conversion", 100.0, "Incremental conversion (pp)"),
        ("incremental_margin", 1.0, "Incremental net margin per contact"),
    )
    for ax, (key, scale, title) in zip(axes, panels, strict=True):
        for y, r in enumerate(rows):
            est = r[key]
            color = COLORS[r[f"{key}_conclusion"]]
            if est is None:
                ax.text(0, y, "no estimate", va="center", ha="center", fontsize=8, color=color)
                continue
            lo, hi = r[f"{key}_ci_low"], r[f"{key}_ci_high"]
            err = [[(est - lo) * scale], [(hi - est) * scale]]
            ax.errorbar(est * scale, y, xerr=err, fmt="o", color=color, capsize=3, ms=6)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(title, fontsize=11)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), labels, fontsize=9)
    axes[0].invert_yaxis()
    handles = [
        axes[1].scatter([], [], color=c, label=k.replace("_", " ")) for k, c in COLORS.items()
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=9)
    fig.subplots_adjust(bottom=0.9 / (0.42 * len(rows) + 1.6))
    return _svg(fig)


def curve_chart(summary: dict[str, Any]) -> str:
    """Cumulative conversion by days since the decision: contacts against holdouts."""
    pts = summary["conversion_curve"]
    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    days = [p["day"] for p in pts]
    for arm, color, label in (
        ("treated", TREATED_COLOR, "contacted"),
        ("holdout", HOLDOUT_COLOR, "holdout"),
    ):
        ax.step(
            days,
            [100 * (p[arm] or 0.0) for p in pts],
            where="post",
            color=color,
            label=label,
            lw=2,
        )
    ax.set_xlabel("days since contact")
    ax.set_ylabel("converted (%)")
    ax.set_title("Conversion over time since contact", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return _svg(fig)


def calibration_chart(summary: dict[str, Any]) -> str:
    """Realised conversion (95% interval) against the predicted one, by decile."""
    rows = summary["calibration"]
    fig = Figure(figsize=(4.8, 4.4))
    ax = fig.subplots()
    pred = [100 * r["predicted"] for r in rows]
    real = [100 * r["realised"] for r in rows]
    err = [
        [100 * (r["realised"] - r["ci_low"]) for r in rows],
        [100 * (r["ci_high"] - r["realised"]) for r in rows],
    ]
    top = max([*pred, *real, 1.0]) * 1.1
    ax.plot([0, top], [0, top], color="grey", ls="--", lw=1, label="perfect calibration")
    ax.errorbar(pred, real, yerr=err, fmt="o", color=TREATED_COLOR, capsize=3, label="decile")
    ax.set_xlabel("predicted conversion (%)")
    ax.set_ylabel("realised conversion (%)")
    ax.set_title("Calibration by decile", fontsize=11)
    ax.legend(frameon=False, fontsize=9)
    ax.grid(alpha=0.3)
    return _svg(fig)


def blocks_chart(summary: dict[str, Any]) -> str:
    """Decisions touched by each guardrail reason."""
    rows = summary["guardrail_blocks"][:20]
    fig = Figure(figsize=(7, 0.35 * len(rows) + 1.2))
    ax = fig.subplots()
    ax.barh([r["reason"] for r in rows], [r["decisions"] for r in rows], color="#8073ac")
    ax.invert_yaxis()
    ax.set_xlabel("decisions with at least one option blocked")
    ax.set_title("Guardrail blocks by reason", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


_COLUMNS: Final = (
    ("group", "Group", "num"),
    ("contacts", "Contacts", "int"),
    ("delivered", "Delivered", "int"),
    ("open_rate", "Open rate", "pct"),
    ("click_rate", "Click rate", "pct"),
    ("conversion_rate", "Conversion", "pct"),
    ("holdout_conversion_rate", "Holdout conv.", "pct"),
    ("incremental_conversion", "Incr. conv.", "pp"),
    ("median_days_to_purchase", "Median days to buy", "num"),
    ("revenue_per_contact", "Revenue / contact", "money"),
    ("net_margin_per_contact", "Net margin / contact", "money"),
    ("incremental_margin", "Incr. margin / contact", "money"),
    ("incentive_cost", "Incentive cost", "money"),
    ("unsubscribes", "Unsubs", "int"),
    ("complaints", "Complaints", "int"),
    ("holdouts", "Holdouts", "int"),
)


NOT_REPORTED: Final = "not reported"
_ENGAGEMENT: Final = frozenset({"delivered", "open_rate", "click_rate"})
"""Columns that are None when no event of their type was reported (shown as not reported)."""


def _table(rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{escape(title)}</th>" for _, title, _ in _COLUMNS)
    body = []
    for r in rows:
        cells = "".join(
            f"<td>{NOT_REPORTED if r[k] is None and k in _ENGAGEMENT else _f(r[k], kind)}</td>"
            for k, _, kind in _COLUMNS
        )
        cls = escape(r["incremental_conversion_conclusion"])
        body.append(f'<tr class="{cls}">{cells}</tr><tr class="note"><td colspan="16">')
        body.append(f"{escape(r['statement'])} <i>(control: {escape(r['control'])})</i></td></tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _simple_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>Nothing to show.</p>"
    head = "".join(f"<th>{escape(k.replace('_', ' '))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{_f(v)}</td>" for v in r.values()) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


_STYLE: Final = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}
.headline{font-size:1.25em;background:#f4f7fb;border-left:5px solid #2166ac;padding:.8em 1em}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{background:#f7f7f7;border-radius:6px;
padding:.6em 1em;min-width:9em}.card b{display:block;font-size:1.4em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1.5em}
th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:right}
th:first-child,td:first-child{text-align:left}
tr.note td{text-align:left;color:#555;font-size:.9em;border-bottom:2px solid #bbb}
tr.positive td:first-child{border-left:4px solid #1a9850}
tr.negative td:first-child{border-left:4px solid #d73027}
svg{max-width:100%;height:auto}details{margin:1em 0}
"""


def render_html(summary: dict[str, Any]) -> str:
    """The whole report as one HTML document."""
    o, t, f = summary["overall"], summary["totals"], summary["filters"]
    period = f"{f['since'] or 'start'} to {f['until'] or 'now'}"
    scope = f"campaign {f['campaign']}" if f["campaign"] else "all campaigns"
    cards = [
        ("Contacts", _f(t["contacts"], "int")),
        ("Holdouts", _f(t["holdouts"], "int")),
        ("Conversion", _f(o["conversion_rate"], "pct")),
        ("Holdout conversion", _f(o["holdout_conversion_rate"], "pct")),
        ("Incremental conversion", _f(o["incremental_conversion"], "pp")),
        ("Incr. margin / contact", _f(o["incremental_margin"], "money")),
        ("Incentive cost", _f(o["incentive_cost"], "money")),
        ("Unsubscribes", _f(o["unsubscribes"], "int")),
    ]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Win-back report: {escape(scope)}</title><style>{_STYLE}</style></head><body>",
        "<h1>Win-back campaign report</h1>",
        f"<p class='sub'>{escape(scope)}, decisions from {escape(period)}; outcomes seen up to "
        f"{escape(str(summary['as_of'] or '–'))}; generated {escape(summary['generated_at'])}</p>",
        f"<p class='headline'>{escape(o['statement'])}</p>",
        f"<p class='sub'>Compared: {escape(summary['comparison'])}.</p>",
        "<div class='cards'>",
        *(f"<div class='card'>{escape(k)}<b>{v}</b></div>" for k, v in cards),
        "</div><h2>What the contacts added, by group</h2>",
        "<p>Dots are estimates against the holdout, bars their 95% interval; grey means the "
        "interval includes zero, light grey that the group is too small to say.</p>",
        f"<figure id='lift-chart'>{lift_chart(summary)}</figure>",
        f"<figure id='conversion-curve'>{curve_chart(summary)}</figure>",
        "<h2>Calibration</h2>",
        f"<figure id='calibration-chart'>{calibration_chart(summary)}</figure>"
        if summary["calibration"]
        else "<p>No calibration: predicted conversion is not logged for enough contacts.</p>",
        "<h2>Does the win-back last? Repeat purchase within two quarters</h2>",
        _simple_table(summary["repeat_purchase"]),
        "<h2>Guardrail blocks</h2>",
        f"<figure id='blocks-chart'>{blocks_chart(summary)}</figure>"
        if summary["guardrail_blocks"]
        else "<p>No option was blocked by a guardrail.</p>",
        "<h2>Details by group</h2>",
        _table([o]),
    ]
    for dim, rows in summary["groups"].items():
        parts += [f"<h3>By {escape(DIM_LABELS.get(dim, dim).lower())}</h3>", _table(rows)]
    parts += [
        "<h2>Incentive budget used</h2>",
        _simple_table(summary["budget_usage"]),
        "<details><summary>Definitions and notes</summary><ul>",
        *(
            f"<li><b>{escape(k)}</b>: {escape(str(v))}</li>"
            for k, v in summary["definitions"].items()
        ),
        *(f"<li>{escape(n)}</li>" for n in summary["notes"]),
        "</ul></details></body></html>",
    ]
    return "\n".join(parts)
