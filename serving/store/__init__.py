"""The decision store: decision log, contacts, events, consent, preferences, budget usage.

Typical use::

    from serving.store import Store, upgrade_database

    upgrade_database(url)           # once at start-up (idempotent)
    store = Store.from_url(url)     # one per process, kept on app.state
    result = store.try_record_contact(decision, caps)

SQLite (`sqlite:///winback.db`, the default) and PostgreSQL
(`postgresql+psycopg://user@host/db`) are both supported.
"""

from serving.store.caps import CapWindow, ContactCaps, check_caps
from serving.store.engine import DEFAULT_DATABASE_URL, create_store_engine
from serving.store.migrate import upgrade_database
from serving.store.records import (
    BudgetTotals,
    ConsentEntry,
    CustomerState,
    DecisionRecord,
    EventRecord,
    EventResult,
    IdempotencyClaim,
    Preferences,
    RecordResult,
)
from serving.store.repository import Store

__all__ = [
    "DEFAULT_DATABASE_URL",
    "BudgetTotals",
    "CapWindow",
    "ConsentEntry",
    "ContactCaps",
    "CustomerState",
    "DecisionRecord",
    "EventRecord",
    "EventResult",
    "IdempotencyClaim",
    "Preferences",
    "RecordResult",
    "Store",
    "check_caps",
    "create_store_engine",
    "upgrade_database",
]
