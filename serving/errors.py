"""Errors raised by the `serving` package.

Hierarchy::

    ServingError                  base of everything this package raises; has a stable `code`
    ├── PolicyError               policy.yaml is missing, not YAML, or invalid (names the key)
    ├── ModelUnavailableError     no model is registered, or the registered one cannot be loaded
    └── StoreError                the decision store failed (SQLAlchemy errors are translated)
        ├── StoreUnavailableError the database cannot be reached or opened
        ├── DuplicateDecisionError a decision id was recorded before (the log is append-only)
        ├── IdempotencyKeyTakenError a request's idempotency key was stored before (a repeat)
        └── MigrationError        the schema could not be brought to the current revision

`code` is what the HTTP API returns beside a human message, so it must never change for an
existing error; add a new subclass rather than reuse a code for another meaning. Errors from
SQLAlchemy, Alembic, PyYAML and pydantic are translated into these at the module boundary, so
callers never see a library traceback for bad input or an unreachable database.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base class of the errors raised by `serving`."""

    code = "serving_error"


class PolicyError(ServingError):
    """The policy file is missing, unreadable, or breaks the policy schema."""

    code = "policy_invalid"


class ModelUnavailableError(ServingError):
    """No model is registered, or the registered model cannot be loaded."""

    code = "model_unavailable"


class StoreError(ServingError):
    """The decision store failed to read or write."""

    code = "store_error"


class StoreUnavailableError(StoreError):
    """The database cannot be reached, opened or authenticated against."""

    code = "store_unavailable"


class DuplicateDecisionError(StoreError):
    """A decision with this id is already in the (append-only) decision log."""

    code = "duplicate_decision"


class IdempotencyKeyTakenError(StoreError):
    """The idempotency key a recording transaction was to store exists: the request is a
    repeat (or a concurrent twin). Nothing of that transaction was written."""

    code = "idempotency_key_taken"

    def __init__(self, key: str) -> None:
        super().__init__(f"request_id: {key!r} was stored before")
        self.key = key


class MigrationError(StoreError):
    """Alembic could not upgrade the database schema."""

    code = "store_migration"
