"""Run verbs of the ``rehearsal`` CLI beside ``run``: ``compare`` (a sweep over methods and seeds), and the
``--set KEY=VALUE`` option both take.

The run loop prints through the Trainer (its log dicts go to stdout): while runs train, stdout is sent to
stderr, so that ``--json`` leaves one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from rehearsal.cli.common import KEY_ENV, Report, Verb, keys_from_args
from rehearsal.cli.records import field_list
from rehearsal.errors import ConfigError
from rehearsal.runner.config import RunConfig

__all__ = ["add_set_argument", "load_run_config", "run_verbs", "stdout_to_stderr"]


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
    add_set_argument(p)
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

    with stdout_to_stderr():
        result = compare(
            config,
            methods=args.methods,
            seeds=args.seeds,
            output_dir=args.output_dir,
            resume=args.resume,
            keys=keys_from_args(args),
            on_run=announce,
        )
    out = result.output_dir
    files = [str(out / name) for name in ("comparison.md", "comparison.json", "comparison.png")]
    lines = [result.to_markdown(), f"wrote {', '.join(files)}"]
    return Report({**result.to_dict(), "files": files}, lines)


def run_verbs() -> dict[str, Verb]:
    return {
        "compare": Verb(
            "train several methods x seeds from one config; a mean ± sd table and a plot",
            _compare_args,
            _compare,
            uses_memory=False,
        )
    }
