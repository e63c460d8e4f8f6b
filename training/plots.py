"""Figures logged with every training run: Qini curves, reliability, feature importance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

# Figures are built with the object API (no pyplot): no backend, no display, no global state.


def qini_plot(curves: dict[str, Any]) -> Figure:
    """One Qini curve per option against its random-targeting diagonal.

    `curves` maps an option to `training.metrics.qini_curve`'s (k, Q(k)), k in rows; each
    curve's k is divided by its last value, so x is the share of that option's rows targeted
    and every curve, and its diagonal from (0, 0) to (1, Q(n)), spans [0, 1].
    """
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for option, (k, gain) in curves.items():
        k = np.asarray(k, dtype=float)
        share = k / k[-1] if len(k) and k[-1] > 0 else k
        ax.plot(share, gain, label=option)
        ax.plot([0, 1], [0, gain[-1]], color="grey", linewidth=0.6, linestyle=":")
    ax.set_xlabel("share of customers targeted (by predicted uplift)")
    ax.set_ylabel("cumulative incremental conversions (Qini)")
    ax.set_title("Qini curves per option (held-out contacts)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def qini_figure(curves: dict[str, Any], path: Path) -> Path:
    """`qini_plot` saved to `path`."""
    qini_plot(curves).savefig(path, dpi=110)
    return path


def reliability_figure(table: pd.DataFrame, path: Path) -> Path:
    """Predicted against observed reactivation rate by decile of prediction."""
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
    ax.plot(table["predicted"], table["observed"], marker="o")
    top = float(max(table["predicted"].max(), table["observed"].max(), 0.05)) * 1.05
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("predicted P(reactivates)")
    ax.set_ylabel("observed rate")
    ax.set_title("Reactivation calibration (test cutoff)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def importance_figure(importance: pd.Series, path: Path, top: int = 20) -> Path:
    """Gain importance of the top features."""
    imp = importance.sort_values(ascending=True).tail(top)
    fig = Figure(figsize=(6, 0.3 * len(imp) + 1))
    ax = fig.subplots()
    ax.barh(imp.index.astype(str), imp.to_numpy())
    ax.set_xlabel("total gain")
    ax.set_title("Reactivation model: feature importance")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
