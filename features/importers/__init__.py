"""Importers that turn public datasets into winback's data forms.

- `import_cdnow`: the CDNOW purchase log -> a data directory (raw contract tables).
- `import_hillstrom`: the Hillstrom e-mail test -> an `offer_response` modeling frame.

docs/data.md describes how each source maps onto the contract.
"""

from __future__ import annotations

from features.importers.cdnow import DEFAULT_MARGIN_RATE, CdnowImport, import_cdnow, read_cdnow
from features.importers.hillstrom import HillstromImport, import_hillstrom, read_hillstrom

__all__ = [
    "DEFAULT_MARGIN_RATE",
    "CdnowImport",
    "HillstromImport",
    "import_cdnow",
    "import_hillstrom",
    "read_cdnow",
    "read_hillstrom",
]
