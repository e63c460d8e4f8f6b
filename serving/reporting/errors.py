"""Errors raised by `serving.reporting`.

`ReportError` names the option or field that is wrong (``since: ...``); database failures
while reading surface as the store's own `serving.errors.StoreError` family.
"""

from __future__ import annotations

from serving.errors import ServingError


class ReportError(ServingError):
    """A report was asked for with invalid options (dates, format, output path)."""

    code = "report_invalid"
