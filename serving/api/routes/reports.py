"""`GET /v1/reports/summary`: the campaign report as JSON (admin key only).

The same summary `winback report --format json` writes (`serving.reporting.report_summary`):
incremental conversion and margin against the holdout, overall and per segment, with the
conversion curve, repeat purchase, guardrail blocks, calibration and budget usage.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from serving.api import schemas
from serving.api.deps import AdminKey, RuntimeDep
from serving.api.errors import ApiError
from serving.reporting import ReportError, report_summary

router = APIRouter(prefix="/v1/reports", tags=["reports"])
_FIELD = re.compile(r"^([A-Za-z_]\w*): ")
_QUERY_NAMES = {"campaign_id": "campaign"}  # report field name -> query parameter


def _report_error(exc: ReportError) -> ApiError:
    """422 naming the query parameter the report rejected (`until: ... is not after since`)."""
    m = _FIELD.match(str(exc))
    field = _QUERY_NAMES.get(m.group(1), m.group(1)) if m else None
    return ApiError(422, exc.code, str(exc), field)


@router.get("/summary")
def summary(
    rt: RuntimeDep,
    _: AdminKey,
    since: Annotated[
        schemas.Timestamp | None,
        Query(description="decisions at or after this time (UTC if naive)"),
    ] = None,
    until: Annotated[
        schemas.Timestamp | None, Query(description="decisions before this time (UTC if naive)")
    ] = None,
    campaign: Annotated[
        str | None,
        Query(
            max_length=128, pattern=schemas.PRINTABLE, description="only this campaign (wave) id"
        ),
    ] = None,
) -> JSONResponse:
    """The report over the decisions in `[since, until)`, optionally of one campaign."""
    try:
        body = report_summary(rt.store, since=since, until=until, campaign=campaign)
    except ReportError as exc:
        raise _report_error(exc) from None
    return JSONResponse(body)
