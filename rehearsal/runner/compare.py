"""A sweep: one run config trained with several methods and seeds, summarised as mean ± sd per method.

``rehearsal compare CONFIG --methods naive,hybrid --seeds 0,1`` calls :func:`compare`. Each (method, seed)
is an ordinary run (:func:`rehearsal.runner.loop.run`) in its own folder ``OUT/<method>/seed<seed>/``, with
everything a run writes there; the sweep adds ``comparison.md``, ``comparison.json`` and
``comparison.png`` to ``OUT``. Every run is checked (key, folder, data) before the first one trains, so a
sweep does not stop an hour in on a problem it could have seen at the start.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rehearsal._files import write_json
from rehearsal.errors import ConfigError
from rehearsal.runner.config import METHODS, RunConfig
from rehearsal.runner.preflight import preflight
from rehearsal.runner.results import summarize

if TYPE_CHECKING:
    from rehearsal.crypto.keys import KeyRing
    from rehearsal.runner.tasks import TaskStream

__all__ = ["METRICS", "Comparison", "compare", "mean_sd", "plan", "run_folder", "write_outputs"]

# The summary numbers compared, with the names a table shows.
METRICS = {"average_accuracy": "ACC", "forgetting": "forgetting", "backward_transfer": "BWT"}


def run_folder(out: Path, method: str, seed: int) -> Path:
    return out / method / f"seed{seed}"


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); sd is None for fewer than two values."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


class Comparison:
    """The runs of a sweep and, per method, each metric's mean ± sd over the seeds."""

    def __init__(self, config: RunConfig, output_dir: Path, runs: list[dict[str, Any]]) -> None:
        self.config, self.output_dir, self.runs = config, output_dir, runs

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r["method"] for r in self.runs))

    @property
    def seeds(self) -> list[int]:
        return list(dict.fromkeys(int(r["seed"]) for r in self.runs))

    def table(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{method: {metric: {"mean", "sd", "n", "values"}}}``; a metric a run could not measure (one
        task: no forgetting) is left out of its mean."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for method in self.methods:
            rows = [r for r in self.runs if r["method"] == method]
            out[method] = {}
            for metric in METRICS:
                values = [float(r["summary"][metric]) for r in rows if r["summary"].get(metric) is not None]
                mean, sd = mean_sd(values)
                out[method][metric] = {"mean": mean, "sd": sd, "n": len(values), "values": values}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir),
            "methods": self.methods,
            "seeds": self.seeds,
            "table": self.table(),
            "runs": self.runs,
            "config": self.config.to_dict(),
        }

    def to_markdown(self) -> str:
        head = " | ".join(METRICS.values())
        lines = [
            f"## {', '.join(self.methods)} over seeds {', '.join(map(str, self.seeds))} (mean ± sd)",
            "",
            f"| method | {head} | runs |",
            "|---|" + "---|" * (len(METRICS) + 1),
        ]
        for method, metrics in self.table().items():
            cells = [_cell(m["mean"], m["sd"]) for m in metrics.values()]
            n = sum(1 for r in self.runs if r["method"] == method)
            lines.append(f"| {method} | {' | '.join(cells)} | {n} |")
        return "\n".join(lines) + "\n"


def _cell(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.3f}" if sd is None else f"{mean:.3f} ± {sd:.3f}"


def _check(methods: Sequence[str], seeds: Sequence[int]) -> None:
    if not methods:
        raise ConfigError("a comparison needs at least one method")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; known: {sorted(METHODS)}")
    if len(set(methods)) != len(methods) or len(set(seeds)) != len(seeds):
        raise ConfigError("--methods and --seeds must not repeat a value")
    if not seeds:
        raise ConfigError("a comparison needs at least one seed")


def plan(
    config: RunConfig, *, methods: Sequence[str], seeds: Sequence[int], output_dir: Path
) -> list[RunConfig]:
    """The run configs of the sweep, method-major, each writing into its own folder."""
    _check(methods, seeds)
    return [
        config.replace(method=m, seed=s, output_dir=str(run_folder(output_dir, m, s)))
        for m in methods
        for s in seeds
    ]


def compare(
    config: RunConfig,
    *,
    methods: Sequence[str],
    seeds: Sequence[int],
    output_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    keys: KeyRing | None = None,
    stream: TaskStream | None = None,
    on_run: Callable[[RunConfig], None] | None = None,
    predictors: Sequence[str] | None = None,
) -> Comparison:
    """Train ``config`` once per method and seed, then write the table and the plot into ``output_dir``
    (default: the config's). ``on_run`` is told of each run before it starts (a progress line).

    ``predictors`` compares read-outs too: every run reads each of them out of its own weights (one
    training, several predictors), and the table has a row per method and predictor (``random/ncm``)."""
    out = Path(output_dir if output_dir is not None else config.output_dir)
    if predictors:
        config = config.replace(readouts=[p for p in dict.fromkeys(predictors) if p != config.prediction])
    configs = plan(config, methods=methods, seeds=seeds, output_dir=out)
    checked = [preflight(c, output_dir=c.output_dir, resume=resume, keys=keys) for c in configs]
    from rehearsal.runner.loop import run  # torch and transformers: only once every run is checked

    runs: list[dict[str, Any]] = []
    for c, check in zip(configs, checked, strict=True):
        if on_run is not None:
            on_run(c)
        result = run(c, resume=resume, keys=check.keys, stream=stream)
        read = {c.prediction: result.summary} | {n: summarize(m) for n, m in result.readouts.items()}
        for name in predictors or [c.prediction]:
            runs.append(
                {
                    "method": f"{c.method}/{name}" if predictors else c.method,
                    "seed": c.seed,
                    "output_dir": str(Path(c.output_dir).relative_to(out)),
                    "summary": {m: read[name][m] for m in METRICS},
                    "wall_seconds": result.cost.wall_seconds,
                }
            )
    comparison = Comparison(config, out, runs)
    write_outputs(comparison)
    return comparison


def write_outputs(comparison: Comparison) -> None:
    from rehearsal.runner.plots import plot_comparison

    out = comparison.output_dir
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "comparison.json", comparison.to_dict())
    # comparison.md and the plot are for people (nothing reads them back): written plainly.
    (out / "comparison.md").write_text(comparison.to_markdown(), encoding="utf-8")
    plot_comparison(comparison.table(), METRICS, out / "comparison.png")
