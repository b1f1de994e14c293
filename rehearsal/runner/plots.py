"""PNG figures of an accuracy matrix: a heatmap, and each task's accuracy as training moves on; and of a
probe trace: accuracy step by step (``rehearsal.runner.anytime``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.runner.anytime import ProbeTrace
from rehearsal.runner.metrics import AccuracyMatrix

__all__ = ["plot_accuracy_heatmap", "plot_accuracy_over_time", "plot_comparison", "plot_probe_curve"]


def _pyplot() -> object:
    # Agg: runs write PNGs on headless machines; never open a window.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_heatmap(matrix: AccuracyMatrix, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """R[i][j] (accuracy on task j after training on task i), annotated; blank where not measured."""
    plt = _pyplot()
    r = matrix.matrix
    names = matrix.task_names
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.5, 1.0 * len(names) + 1.8))  # type: ignore[attr-defined]
    image = ax.imshow(np.ma.masked_invalid(r), vmin=0.0, vmax=1.0, cmap="viridis")
    for i in range(len(names)):
        for j in range(len(names)):
            if not np.isnan(r[i, j]):
                ax.text(
                    j,
                    i,
                    f"{r[i, j]:.2f}",
                    ha="center",
                    va="center",
                    color="white" if r[i, j] < 0.6 else "black",
                    fontsize=9,
                )
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("after training on")
    ax.set_title(title or "accuracy matrix")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def plot_accuracy_over_time(matrix: AccuracyMatrix, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """One line per task: its accuracy after each training phase, from the phase that trained it on."""
    plt = _pyplot()
    r = matrix.matrix
    names = matrix.task_names
    fig, ax = plt.subplots(figsize=(7, 4))  # type: ignore[attr-defined]
    steps = np.arange(len(names))
    for j, name in enumerate(names):
        column = r[:, j].copy()
        column[:j] = np.nan  # before its own training a task's accuracy is not "remembering"
        if not np.isnan(column).all():
            ax.plot(steps, column, marker="o", label=name)
    ax.set_xticks(steps, names, rotation=30, ha="right")
    ax.set_xlabel("after training on")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "per-task accuracy over the stream")
    return _save(fig, path)


def plot_comparison(
    table: Mapping[str, Mapping[str, Mapping[str, Any]]],
    labels: Mapping[str, str],
    path: str | os.PathLike[str],
) -> Path:
    """One panel per metric: a bar per method at its mean over seeds, the error bar one sd."""
    plt = _pyplot()
    methods = list(table)
    fig, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels), 3.6), squeeze=False)  # type: ignore[attr-defined]
    x = np.arange(len(methods))
    for ax, (metric, label) in zip(axes[0], labels.items(), strict=True):
        means = [table[m][metric]["mean"] for m in methods]
        sds = [table[m][metric]["sd"] or 0.0 for m in methods]
        heights = [np.nan if v is None else v for v in means]
        ax.bar(x, heights, yerr=sds, capsize=4, color="tab:blue", alpha=0.8)
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xticks(x, methods, rotation=30, ha="right")
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_probe_curve(trace: ProbeTrace, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Each task's probe accuracy over training steps, the mean over seen tasks in black, and a dotted
    line where each task begins (where a stability gap opens)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))  # type: ignore[attr-defined]
    steps = np.asarray(trace.steps)
    for name in trace.task_names:
        values = np.asarray([row.get(name, np.nan) for row in trace.accuracy], dtype=np.float64)
        if not np.isnan(values).all():
            ax.plot(steps, values, marker=".", linewidth=1, label=name)
    seen = np.asarray([np.nan if v is None else v for v in trace.seen_average()], dtype=np.float64)
    ax.plot(steps, seen, color="black", linewidth=2, label="seen tasks (mean)")
    for start in trace.task_starts:
        if start is not None:
            ax.axvline(start, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("training step")
    ax.set_ylabel("probe accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "anytime accuracy over the stream")
    return _save(fig, path)


def _save(fig: object, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(out, dpi=110)  # type: ignore[attr-defined]
    import matplotlib.pyplot as plt

    plt.close(fig)  # type: ignore[arg-type]
    return out
