"""Run verbs of the ``rehearsal`` CLI beside ``run``: ``compare`` (a sweep over methods and seeds), and the
``--set KEY=VALUE`` option both take.

The run loop prints through the Trainer (its log dicts go to stdout): while runs train, stdout is sent to
stderr, so that ``--json`` leaves one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Iterator
from typing import Any

from rehearsal.cli.common import KEY_ENV, Report, Verb, keys_from_args
from rehearsal.cli.records import field_list
from rehearsal.errors import ConfigError
from rehearsal.runner.config import RunConfig

__all__ = [
    "add_set_argument",
    "add_verbose_argument",
    "load_run_config",
    "quiet_libraries",
    "run_verbs",
    "stdout_to_stderr",
]


def add_set_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one setting of the config (repeatable; dotted keys reach tables: replay.ratio=0.25)",
    )


def load_run_config(args: argparse.Namespace) -> RunConfig:
    """CONFIG with the ``--set`` overrides applied."""
    from rehearsal.runner.overrides import apply_overrides

    return apply_overrides(RunConfig.from_file(args.config), args.overrides)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    with contextlib.redirect_stdout(sys.stderr):
        yield


def add_verbose_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show the libraries' load reports and progress bars (default: one line per phase)",
    )


@contextlib.contextmanager
def quiet_libraries(verbose: bool) -> Iterator[None]:
    """Unless ``verbose``: transformers' and datasets' warnings (load reports, "newly initialized"
    weights) and progress bars (weight loading, "Flattening the indices", the Trainer's, nested in the
    run's) are off; with it, on. Through the libraries' own switches, restored afterwards."""
    import datasets
    from transformers.utils import logging

    hf_logging: Any = logging  # its switches are untyped
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    data_level, data_bars = datasets.logging.get_verbosity(), datasets.is_progress_bar_enabled()
    _bars(hf_logging, datasets, on=verbose)
    if not verbose:
        hf_logging.set_verbosity_error()
        datasets.logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        datasets.logging.set_verbosity(data_level)
        _bars(hf_logging, None, on=bars)
        _bars(None, datasets, on=data_bars)


def _bars(hf_logging: Any, datasets: Any, *, on: bool) -> None:
    """Turn transformers' (``hf_logging``) and datasets' progress bars on or off; None skips one."""
    if hf_logging is not None and on:
        hf_logging.enable_progress_bar()
    elif hf_logging is not None:
        hf_logging.disable_progress_bar()
    if datasets is not None and on:
        datasets.enable_progress_bars()
    elif datasets is not None:
        datasets.disable_progress_bars()


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integer seeds, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"expected one or more seeds >= 0, got {text!r}")
    return seeds


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG", help="run config (.toml, .yaml or .json) shared by every run")
    p.add_argument(
        "--methods",
        type=field_list,
        required=True,
        metavar="A,B",
        help="the methods to compare, e.g. naive,hybrid",
    )
    p.add_argument(
        "--seeds", type=_seed_list, default=[0], metavar="0,1", help="seeds per method (default: 0)"
    )
    p.add_argument(
        "--predictors",
        type=field_list,
        default=None,
        metavar="A,B",
        help="also compare predictors read out of each run's weights, e.g. head,ncm (rows: method/predictor)",
    )
    add_set_argument(p)
    add_verbose_argument(p)
    p.add_argument("--output-dir", help="where the runs and the table go (default: the config's output_dir)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted sweep: reuse finished runs")
    p.add_argument("--key-file", help=f"file with the base64 master key for memories (default: ${KEY_ENV})")


def _compare(args: argparse.Namespace) -> Report:
    from rehearsal.runner.compare import compare

    config = load_run_config(args)
    if not args.methods:
        raise ConfigError("--methods names no method")
    total = len(args.methods) * len(args.seeds)
    started: list[RunConfig] = []

    def announce(c: RunConfig) -> None:
        started.append(c)
        sys.stderr.write(f"[{len(started)}/{total}] {c.method} seed {c.seed} -> {c.output_dir}\n")

    with stdout_to_stderr(), quiet_libraries(args.verbose):
        result = compare(
            config,
            methods=args.methods,
            seeds=args.seeds,
            output_dir=args.output_dir,
            resume=args.resume,
            keys=keys_from_args(args),
            on_run=announce,
            predictors=args.predictors,
        )
    out = result.output_dir
    files = [str(out / name) for name in ("comparison.md", "comparison.json", "comparison.png")]
    lines = [result.to_markdown(), f"wrote {', '.join(files)}"]
    data = {**result.to_dict(), "files": files}
    warning = small_test_warning(config)
    if warning is not None:
        data["warnings"] = [warning]
        lines.append(f"warning: {warning}")
    return Report(data, lines)


# Above this resolution (the 95% half-width of a difference between two accuracies) a table of methods
# is mostly noise, and the warning says so.
_RESOLUTION_WARNING = 0.10


def small_test_warning(config: RunConfig) -> str | None:
    """A warning when the stream's smallest test set cannot separate methods whose accuracies differ by
    less than ~10 points: two accuracies on n examples each differ by noise alone up to
    1.96 * sqrt(2) * sqrt(p (1 - p) / n), at most 1.39 / sqrt(n) (p = 0.5)."""
    from rehearsal.runner.loop import load_stream

    tests = {task.name: len(task.test) for task in load_stream(config).tasks}
    if not tests:
        return None
    name, n = min(tests.items(), key=lambda item: item[1])
    spread = 1.96 * math.sqrt(2.0) * 0.5
    resolution = spread / math.sqrt(max(n, 1))
    if resolution <= _RESOLUTION_WARNING:
        return None
    needed = math.ceil((spread / _RESOLUTION_WARNING) ** 2)
    return (
        f"the smallest test set ({name!r}) has {n} examples: accuracy differences under about "
        f"{resolution:.2f} between methods there can be noise alone (95%); raise max_test_per_class "
        f"({needed} test examples per task resolve {_RESOLUTION_WARNING:.2f}), or compare over more seeds"
    )


def run_verbs() -> dict[str, Verb]:
    return {
        "compare": Verb(
            "train several methods x seeds from one config; a mean ± sd table and a plot",
            _compare_args,
            _compare,
            uses_memory=False,
        )
    }
