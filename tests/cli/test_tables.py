"""Evaluation tables fit an 80-column terminal: no number cut, counts as integers."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from rich.console import Console

from cli.tables import format_cell, print_frame


def _render(df: pd.DataFrame, width: int = 80, title: str = "t") -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    print_frame(console, title, df)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def _slices() -> pd.DataFrame:
    """The shape of `policy_value_slices`: two key levels, a float count, nine columns."""
    rng = np.random.default_rng(0)
    groups = [("value_tier", g) for g in ("high", "mid", "occasional")] + [
        ("lapse_state", g) for g in ("at_risk", "churned", "lapsed")
    ]
    df = pd.DataFrame(
        {
            "slice": [s for s, _ in groups],
            "group": [g for _, g in groups],
            "n": [3398.0, 1619.0, 684.0, 12345.0, 2815.0, np.nan],
            "deviating": rng.random(6),
            "learned_dr": rng.normal(0, 2, 6),
            "best_single_dr": rng.normal(0, 2, 6),
            "difference": rng.normal(0, 1, 6) - 10,
            "ci_low": rng.normal(0, 1, 6),
            "ci_high": rng.normal(0, 1, 6),
            "lift_top_decile": rng.random(6) * 3,
        }
    )
    return df.set_index(["slice", "group"])


def test_a_wide_table_fits_80_columns_without_cutting_a_number() -> None:
    df = _slices()
    out = _render(df)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in out
    # counts as integers, every other number whole with four decimals, NaN as a dash
    for text in ("3,398", "12,345", "684", "—"):
        assert text in out
    assert "3,398.0000" not in out and "684.0" not in out
    for col in df.columns.drop("n"):
        for value in df[col]:
            assert f"{value:,.4f}" in out, (col, value)
    # printed in parts, each repeating the key columns
    assert "t (1 of 2)" in out and "t (2 of 2)" in out
    assert out.count("occasional") == 2 and out.count("lapse_state") == 6
    # headers wrap at their words instead of being cut
    for word in ("lift", "top", "decile", "best", "single"):
        assert word in out


def test_a_table_that_fits_is_one_table_and_headers_are_words() -> None:
    df = _slices()[["n", "deviating", "ci_low"]]
    out = _render(df)
    assert "(1 of" not in out
    assert "ci low" in out and "ci_low" not in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_too_narrow_for_any_column_prints_each_row_vertically() -> None:
    df = _slices()
    out = _render(df, width=30)
    assert max(len(line) for line in out.splitlines()) <= 30
    assert "…" not in out
    assert "t: value_tier, occasional" in out
    assert "684" in out and "12,345" in out


def test_an_unnamed_range_index_is_not_a_column_and_integers_print_as_integers() -> None:
    df = pd.DataFrame({"learner": ["s", "t"], "n": [1000, 20], "z": [0.0, 1.96]})
    out = _render(df)
    assert "index" not in out
    assert "1,000" in out and "1.9600" in out and "0.0000" in out


def test_format_cell() -> None:
    assert format_cell(3398.0, count=True) == "3,398"
    assert format_cell(3398.0) == "3,398.0000"
    assert format_cell(np.int64(7)) == "7"
    assert format_cell(float("nan")) == "—"
    assert format_cell(None) == "—"
    assert format_cell("a b") == "a b"
    assert format_cell(True) == "True"
