"""The campaign report: what win-back contacts earned against the holdout.

Typical use::

    from serving.reporting import report_summary, render

    summary = report_summary(store, since=datetime(2026, 3, 1), campaign="spring")
    Path("report.html").write_text(render(summary, "html"))

`load` reads the store into DataFrames, `metrics` and `stats` compute the report from them
(pure functions), `report` assembles the JSON-able summary and `html` draws the page.
"""

from serving.reporting.errors import ReportError
from serving.reporting.load import ReportFilter
from serving.reporting.report import FORMATS, ReportOptions, build_report, render, report_summary

__all__ = [
    "FORMATS",
    "ReportError",
    "ReportFilter",
    "ReportOptions",
    "build_report",
    "render",
    "report_summary",
]
