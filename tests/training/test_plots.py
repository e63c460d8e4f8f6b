"""Figures: the Qini plot's x axis is the share of rows targeted, as its label says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.metrics import qini_curve
from training.plots import qini_figure, qini_plot


def curves() -> dict[str, tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(0)
    out = {}
    for option, n in (("pct10", 300), ("guide", 120)):
        treated = rng.random(n) < 0.5
        score = rng.random(n)
        y = (rng.random(n) < 0.1 + 0.2 * treated * score).astype(float)
        out[option] = qini_curve(y, treated, score)
    return out


def test_qini_curves_and_diagonals_span_the_share_zero_to_one() -> None:
    c = curves()
    ax = qini_plot(c).axes[0]
    assert len(ax.lines) == 2 * len(c)  # each curve, then its random-targeting diagonal
    for i, (k, q) in enumerate(c.values()):
        assert k[-1] > 1  # qini_curve counts rows
        curve, diagonal = ax.lines[2 * i], ax.lines[2 * i + 1]
        x = np.asarray(curve.get_xdata(), dtype=float)
        assert x[0] == 0.0 and x[-1] == pytest.approx(1.0)
        np.testing.assert_allclose(x, k / k[-1])
        np.testing.assert_array_equal(curve.get_ydata(), q)
        np.testing.assert_allclose(diagonal.get_xdata(), [0.0, 1.0])
        np.testing.assert_allclose(diagonal.get_ydata(), [0.0, q[-1]])


def test_qini_figure_writes_the_png(tmp_path: Path) -> None:
    path = qini_figure(curves(), tmp_path / "qini.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
