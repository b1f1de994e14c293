"""Plots: both figures are written as non-empty PNGs, also for a partly measured matrix."""

from __future__ import annotations

from pathlib import Path

import pytest

from rehearsal.runner.metrics import AccuracyMatrix
from rehearsal.runner.plots import plot_accuracy_heatmap, plot_accuracy_over_time

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def matrix() -> AccuracyMatrix:
    m = AccuracyMatrix(["a", "b", "c"])
    for i, row in enumerate([[0.9, 0.1, 0.0], [0.5, 0.8, 0.1]]):  # "c" not trained yet
        for j, value in enumerate(row):
            m.record(i, j, value)
    return m


@pytest.mark.parametrize("plot", [plot_accuracy_heatmap, plot_accuracy_over_time])
def test_plot_writes_a_png(plot: object, matrix: AccuracyMatrix, tmp_path: Path) -> None:
    out = plot(matrix, tmp_path / "sub" / "fig.png", title="t")  # type: ignore[operator]
    data = Path(out).read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 2000
