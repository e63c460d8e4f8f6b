"""Errors of batch scoring (part of the `serving` error tree)."""

from __future__ import annotations

from serving.errors import ServingError


class BatchError(ServingError):
    """Bad batch input or output: an unknown file type, a missing column, an empty list."""

    code = "batch_error"
