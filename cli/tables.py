"""DataFrames as rich tables that fit the terminal: no number cut, counts as integers.

rich shrinks a table that is too wide by cutting cells (`3,398.…`, `value_…`). Here a number
is never cut: each numeric column is exactly as wide as its widest cell (headers wrap at
their words, `lift_top_decile` -> `lift top decile`), text columns wrap, and a table still too
wide for the console is printed in parts that each repeat its key (index) columns. Where even
one column beside the keys does not fit, each row is printed as its own two-column table.
Counts (`n`, `*_rows`, integer columns) print as integers with thousands separators.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd

MISSING = "—"
COUNT_NAME = re.compile(r"^(n|n_\w+|\w+_rows|rows|count|\w+_count)$")


def _is_count(values: pd.Series, name: str) -> bool:
    import pandas as pd

    if pd.api.types.is_bool_dtype(values):
        return False
    if pd.api.types.is_integer_dtype(values):
        return True
    if not (pd.api.types.is_float_dtype(values) and COUNT_NAME.match(name)):
        return False
    finite = values[values.notna()].to_numpy(dtype=float)
    return bool(len(finite)) and bool((finite == finite.round()).all())


def format_cell(value: Any, count: bool = False) -> str:
    """A cell as text: counts as `3,398`, other numbers with four decimals, NaN as `—`."""
    if value is None:
        return MISSING
    if isinstance(value, bool | str) or not isinstance(value, numbers.Real):
        return str(value)
    number = float(value)
    if math.isnan(number):
        return MISSING
    if count or isinstance(value, numbers.Integral):
        return f"{round(number):,}"
    return f"{number:,.4f}"


def _longest_word(text: str) -> int:
    return max((len(w) for w in text.split()), default=0)


def _table_width(widths: list[int]) -> int:
    """What a rich table with these content widths takes: a rule before each column and one at
    the end, one space either side of a cell except at the two edges (`pad_edge=False`)."""
    return sum(widths) + 3 * len(widths) + 1 - 2 * bool(widths)


def print_frame(console: Console, title: str, df: pd.DataFrame) -> None:
    """Print `df` (its named index levels as key columns) within `console.width` columns."""
    import pandas as pd

    unnamed_range = isinstance(df.index, pd.RangeIndex) and df.index.name is None
    n_keys = 0 if unnamed_range else df.index.nlevels
    frame = df.reset_index(drop=unnamed_range)
    names = [
        "" if n_keys and i < n_keys and str(c).startswith(("index", "level_")) else str(c)
        for i, c in enumerate(frame.columns)
    ]
    cells: list[list[str]] = []
    numeric: list[bool] = []
    for j in range(len(frame.columns)):
        values = frame.iloc[:, j]
        count = _is_count(values, names[j])
        numeric.append(bool(pd.api.types.is_numeric_dtype(values)))
        cells.append([format_cell(v, count) for v in values.tolist()])
    headers = [name.replace("_", " ") for name in names]
    # a number or a word is never cut: the narrowest a column may be
    need = [
        max(
            _longest_word(headers[j]),
            *(len(s) if numeric[j] else _longest_word(s) for s in cells[j]),
            1,
        )
        for j in range(len(names))
    ]
    keys = list(range(n_keys))
    rest = list(range(n_keys, len(names)))
    width = console.width
    parts: list[list[int]] = []
    for j in rest:
        if parts and _table_width([need[i] for i in keys + parts[-1] + [j]]) <= width:
            parts[-1].append(j)
        else:
            parts.append([j])
    if any(_table_width([need[i] for i in keys + part]) > width for part in parts):
        _print_vertically(console, title, headers, cells, n_keys)
        return
    for number, part in enumerate(parts or [[]], start=1):
        suffix = f" ({number} of {len(parts)})" if len(parts) > 1 else ""
        table = Table(title=title + suffix, pad_edge=False)
        for j in keys + part:
            # numbers keep their width; text wraps at words, and only a word longer than the
            # console folds
            table.add_column(
                headers[j],
                justify="right" if numeric[j] else "left",
                width=need[j] if numeric[j] else None,
                min_width=need[j],
                overflow="fold",
            )
        for r in range(len(frame)):
            table.add_row(*[cells[j][r] for j in keys + part])
        console.print(table)


def _print_vertically(
    console: Console, title: str, headers: list[str], cells: list[list[str]], n_keys: int
) -> None:
    """Each row as a table of (column, value) pairs, titled by its key values."""
    n_rows = len(cells[0]) if cells else 0
    for r in range(n_rows):
        key = ", ".join(cells[j][r] for j in range(n_keys)) or str(r + 1)
        table = Table(title=f"{title}: {key}", show_header=False, pad_edge=False)
        table.add_column(overflow="fold")
        table.add_column(justify="right", overflow="fold")
        for j in range(n_keys, len(headers)):
            table.add_row(headers[j], cells[j][r])
        console.print(table)
