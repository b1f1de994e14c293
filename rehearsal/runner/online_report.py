"""What an online run reports: a :class:`~rehearsal.runner.results.RunResult` with its anytime figures
(``online`` in ``results.json``, a line in ``results.md``) and the probe curve ``accuracy_anytime.png``
beside the task-boundary plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rehearsal.runner.anytime import ProbeTrace
from rehearsal.runner.config import RunConfig
from rehearsal.runner.metrics import AccuracyMatrix
from rehearsal.runner.plots import plot_probe_curve
from rehearsal.runner.results import RunResult, build_result, write_outputs
from rehearsal.runner.state import run_memory

__all__ = ["OnlineResult", "write_online_outputs"]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


class OnlineResult(RunResult):
    """A run's result plus ``anytime``: online accuracy, A_AUC, stability gaps, probe cost and trace."""

    anytime: dict[str, Any]

    @classmethod
    def build(
        cls,
        config: RunConfig,
        matrix: AccuracyMatrix,
        totals: dict[str, Any],
        out: Path,
        anytime: dict[str, Any],
    ) -> OnlineResult:
        base = build_result(config, matrix, totals, out, run_memory(out))
        result = cls(base.config, base.matrix, base.cost, out, base.phase_seconds, base.phase_logs)
        result.anytime = anytime
        return result

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "online": self.anytime}

    def to_markdown(self) -> str:
        a = self.anytime
        gaps = ", ".join(
            f"{g['task']} {g['depth']:.3f} (min +{g['min_after']}, back "
            f"{'never' if g['recovered_after'] is None else '+' + str(g['recovered_after'])})"
            for g in a["stability_gaps"]
        )
        return "\n".join(
            [
                super().to_markdown(),
                "| online accuracy | A_AUC | mean gap depth | probe share of wall time |",
                "|---|---|---|---|",
                f"| {_fmt(a['online_accuracy'])} | {_fmt(a['anytime_auc'])} | {_fmt(a['mean_gap_depth'])} | "
                f"{_fmt(a['probe_share'])} |",
                "",
                f"stability gaps (depth; steps into the task): {gaps or '—'}",
                "",
            ]
        )


def write_online_outputs(result: OnlineResult, out: Path) -> None:
    write_outputs(result, out)
    trace = ProbeTrace.from_dict(result.anytime["trace"])
    title = f"{result.config.method} online (seed {result.config.seed})"
    plot_probe_curve(trace, out / "accuracy_anytime.png", title=title)
