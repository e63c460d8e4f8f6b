"""Errors of the decision engine (part of the `serving` error tree)."""

from __future__ import annotations

from serving.errors import ServingError


class EngineInputError(ServingError):
    """The engine was called with inconsistent inputs (shapes, unknown channel or offer id).

    The message names the argument and the problem.
    """

    code = "invalid_decision_input"
