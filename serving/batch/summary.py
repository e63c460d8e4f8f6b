"""The summary of a wave: decisions by action, offer and reason; expected incremental margin.

Built incrementally from each chunk's output table (group-bys on arrays, no per-row work), so
it costs nothing extra in memory however large the wave.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from serving.batch.columns import REASON_SEP

NO_OFFER = "(no contact)"


@dataclass
class Summary:
    """Counts and margins over every decision of a wave.

    Attributes:
        rows: decisions in total.
        by_action / by_offer / by_reason: decision counts (a decision counts once under each
            of its reason codes; `by_offer` uses `(no contact)` when nothing is sent).
        margin_total: sum of the expected incremental margin of the contacts (model values).
        margin_by_offer: the same per offer.
    """

    rows: int = 0
    by_action: Counter[str] = field(default_factory=Counter)
    by_offer: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    margin_total: float = 0.0
    margin_by_offer: dict[str, float] = field(default_factory=dict)

    def add(self, table: pa.Table) -> None:
        """Fold one chunk's output table in."""
        self.rows += table.num_rows
        for name, counter in (("action", self.by_action), ("offer_id", self.by_offer)):
            col = pc.fill_null(table.column(name), NO_OFFER)
            vc = pc.value_counts(col)
            for item in vc.to_pylist():
                counter[str(item["values"])] += int(item["counts"])
        reasons = pc.split_pattern(table.column("reasons"), REASON_SEP)
        for item in pc.value_counts(pc.list_flatten(reasons)).to_pylist():
            self.by_reason[str(item["values"])] += int(item["counts"])
        margin = table.column("expected_incremental_margin")
        self.margin_total += float(pc.sum(margin).as_py() or 0.0)
        grouped = (
            table.select(["offer_id", "expected_incremental_margin"])
            .filter(pc.is_valid(margin))
            .group_by("offer_id")
            .aggregate([("expected_incremental_margin", "sum")])
        )
        for oid, total in zip(
            grouped.column("offer_id").to_pylist(),
            grouped.column("expected_incremental_margin_sum").to_pylist(),
            strict=True,
        ):
            self.margin_by_offer[str(oid)] = self.margin_by_offer.get(str(oid), 0.0) + float(total)

    def offer_rows(self) -> list[tuple[str, int, float]]:
        """(offer id, decisions, expected incremental margin) per offer, most decisions first."""
        return [
            (oid, n, float(self.margin_by_offer.get(oid, 0.0)))
            for oid, n in self.by_offer.most_common()
        ]
