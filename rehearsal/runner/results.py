"""What a run produces: the :class:`RunResult` (accuracy matrix, summary, cost) and the files it writes
into the output folder (``results.json``, ``results.md`` and the two accuracy plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rehearsal._files import write_json
from rehearsal.runner.config import RunConfig
from rehearsal.runner.metrics import AccuracyMatrix, RunCost
from rehearsal.runner.plots import plot_accuracy_heatmap, plot_accuracy_over_time

__all__ = ["RunResult", "build_result", "folder_bytes", "summarize", "write_outputs"]


class RunResult:
    """The outcome of a run: the accuracy matrix, its summary and what it cost."""

    def __init__(
        self,
        config: RunConfig,
        matrix: AccuracyMatrix,
        cost: RunCost,
        output_dir: Path,
        phase_seconds: list[float],
        phase_logs: list[dict[str, float]] | None = None,
        readouts: dict[str, AccuracyMatrix] | None = None,
    ) -> None:
        self.config, self.matrix, self.cost, self.output_dir = config, matrix, cost, output_dir
        self.phase_seconds = phase_seconds
        self.phase_logs = [] if phase_logs is None else phase_logs  # Strategy.after_phase's numbers
        # Other read-outs of the same weights: the head's, when the run predicts through the memory, and
        # the config's extra ``readouts``.
        self.readouts = {} if readouts is None else readouts

    @property
    def head_matrix(self) -> AccuracyMatrix | None:
        """The head's read-out when the run predicts through the memory (None when the head is its own)."""
        return self.readouts.get("head")

    @property
    def summary(self) -> dict[str, Any]:
        return summarize(self.matrix)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "accuracy": self.matrix.to_dict(),
            "summary": self.summary,
            "cost": self.cost.to_dict(),
            "phase_seconds": self.phase_seconds,
            "phase_logs": self.phase_logs,
            "prediction": self.config.prediction,
            "readouts": {
                name: {"accuracy": m.to_dict(), "summary": summarize(m)} for name, m in self.readouts.items()
            },
            **(
                {}
                if self.head_matrix is None
                else {
                    "head_accuracy": self.head_matrix.to_dict(),
                    "head_summary": summarize(self.head_matrix),
                }
            ),
        }

    def to_markdown(self) -> str:
        s = self.summary

        def fmt(value: float | None) -> str:
            return "—" if value is None else f"{value:.3f}"

        c = self.cost
        return "\n".join(
            [
                f"## {self.config.method} (loss={self.config.loss}, seed={self.config.seed})",
                "",
                self.matrix.to_markdown(),
                "",
                "| ACC | forgetting | BWT | wall s | replayed | memory bytes |",
                "|---|---|---|---|---|---|",
                f"| {fmt(s['average_accuracy'])} | {fmt(s['forgetting'])} | {fmt(s['backward_transfer'])} | "
                f"{c.wall_seconds:.1f} | {c.replayed_examples} | {c.memory_bytes_on_disk} |",
                "",
                *self._head_lines(fmt),
            ]
        )

    def _head_lines(self, fmt: Any) -> list[str]:
        """The two read-outs of the same weights side by side, when the run predicts through the memory."""
        if self.head_matrix is None:
            return []
        head, own = summarize(self.head_matrix), self.summary
        return [
            f"Predicted by {self.config.prediction!r} over the memory: ACC {fmt(own['average_accuracy'])}; "
            f"the head of the same weights: ACC {fmt(head['average_accuracy'])}, "
            f"forgetting {fmt(head['forgetting'])}.",
            "",
        ]


def summarize(matrix: AccuracyMatrix) -> dict[str, Any]:
    """ACC after the last measured row; forgetting and BWT when two or more rows are complete (else None)."""
    r = matrix.matrix
    measured = [i for i in range(len(r)) if not np.isnan(r[i, : i + 1]).any()]
    out: dict[str, Any] = {
        "average_accuracy": None,
        "forgetting": None,
        "backward_transfer": None,
        "per_task_forgetting": None,
    }
    if measured:
        out["average_accuracy"] = matrix.average_accuracy(measured[-1])
    if matrix.completed_tasks >= 2:
        out["forgetting"] = matrix.forgetting()
        out["backward_transfer"] = matrix.backward_transfer()
        out["per_task_forgetting"] = matrix.per_task_forgetting()
    return out


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def build_result(
    config: RunConfig, matrix: AccuracyMatrix, totals: dict[str, Any], out: Path, memory_folder: Path
) -> RunResult:
    """The result so far, from the run's running totals."""
    cost = RunCost(
        wall_seconds=float(totals["wall_seconds"]),
        train_examples=int(totals["train_examples"]),
        replayed_examples=int(totals["replayed_examples"]),
        replayed_tokens=int(totals["replayed_tokens"]),
        memory_bytes_on_disk=folder_bytes(memory_folder),
    )
    readouts = {name: AccuracyMatrix.from_dict(m) for name, m in totals.get("readouts", {}).items()}
    return RunResult(
        config,
        matrix,
        cost,
        out,
        list(totals["phase_seconds"]),
        list(totals.get("phase_logs", [])),
        readouts=readouts,
    )


def write_outputs(result: RunResult, out: Path) -> None:
    write_json(out / "results.json", result.to_dict())
    # results.md and the plots are for people (nothing reads them back): written plainly.
    (out / "results.md").write_text(result.to_markdown(), encoding="utf-8")
    title = f"{result.config.method} ({result.config.loss})"
    plot_accuracy_heatmap(result.matrix, out / "accuracy_heatmap.png", title=title)
    plot_accuracy_over_time(result.matrix, out / "accuracy_over_time.png", title=title)
