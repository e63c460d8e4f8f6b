"""Errors raised by the `features` package.

Hierarchy::

    FeaturesError                 base of everything this package raises
    ├── DataContractError         a data directory breaks the contract (carries the report)
    ├── DataSourceError           a file is missing, unreadable or of an unknown format
    └── OfferCatalogError         offers.yaml is missing or invalid (names the key)

Errors from pandas, pyarrow and PyYAML are translated into these at the loader boundary, so
callers (the CLI, the API, the trainer) never see a library traceback for bad input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from features.contract import ValidationReport


class FeaturesError(Exception):
    """Base class of the errors raised by `features`."""

    code = "features_error"


class DataSourceError(FeaturesError):
    """A data file is missing, cannot be read, or has an unsupported format."""

    code = "data_source"


class OfferCatalogError(FeaturesError):
    """The offer catalog (offers.yaml) is missing or invalid."""

    code = "offer_catalog"


class DataContractError(FeaturesError):
    """A data directory violates the data contract; `report` lists every problem."""

    code = "data_contract"

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        n = len(report.problems)
        first = report.problems[0].message() if report.problems else ""
        super().__init__(f"{n} data contract problem(s) in {report.source}; first: {first}")

    def __reduce__(self) -> tuple[type[DataContractError], tuple[ValidationReport]]:
        # rebuilt from its report, not its message (raised in a worker process, then here)
        return (type(self), (self.report,))
