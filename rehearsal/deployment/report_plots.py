"""The report page's figures, each a PNG as a ``data:`` URI so the page is one self-contained file."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["bars_png", "lines_png"]


def _pyplot() -> Any:
    # Agg: reports are written on headless machines; never open a window.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _data_uri(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def lines_png(
    x: Sequence[int],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
) -> str:
    """One line per series over the versions ``x``; a None is a gap (a task not known yet)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for name, values in series.items():
        points = [(v, y) for v, y in zip(x, values, strict=True) if y is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set_xlabel("version")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_xticks(list(x))
    if ylim is not None:
        ax.set_ylim(*ylim)
    if series:
        ax.legend(fontsize="small", loc="best")
    ax.grid(alpha=0.3)
    return _data_uri(fig)


def bars_png(groups: Mapping[str, Mapping[str, int]], *, title: str) -> str:
    """One panel of horizontal bars per group (e.g. entries by task, by label, by tag)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(3.6 * max(len(groups), 1), 3.4), squeeze=False)
    for ax, (name, counts) in zip(axes[0], groups.items(), strict=False):
        labels = list(counts)[:20]
        ax.barh(labels or ["(none)"], [counts[k] for k in labels] or [0])
        ax.set_title(f"by {name}")
        ax.invert_yaxis()
    fig.suptitle(title)
    return _data_uri(fig)
