"""Deployment verbs of the ``rehearsal`` CLI: ``init-deployment``, ``update``, ``shadow``, ``promote``,
``predict``, ``report`` and ``migrate-deployment`` (``rollback``, ``versions``, ``approve`` and
``audit`` take a deployment folder too: its memory is ``DIR/memory``). Torch loads only when a verb trains
or answers.

An update the gate does not pass exits 4 ("fail") or 3 ("needs-approval"), as ``rehearsal gate`` does.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from rehearsal.cli.common import EXIT_FAIL, EXIT_NEEDS_APPROVAL, KEY_ENV, Report, Verb, keys_from_args
from rehearsal.cli.run_verbs import add_verbose_argument, quiet_libraries
from rehearsal.deployment.strategies import deployment_strategy_names
from rehearsal.errors import UpdateBlockedError, ValidationError

__all__ = ["deploy_verbs"]


def _key_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key-file", help=f"file with the base64 master key (default: ${KEY_ENV})")


def _dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="DIR", help="the deployment folder")
    _key_arg(p)


def _init_args(p: argparse.ArgumentParser) -> None:
    _dir_arg(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--memory", metavar="MEMORY", help="the memory folder to start from (copied)")
    source.add_argument("--from-run", metavar="RUN_DIR", help="a finished 'rehearsal run' with a memory")
    p.add_argument("--model", help="the base model folder (default: the run's model, else MiniLM)")
    p.add_argument("--strategy", default="adapter-replay", choices=deployment_strategy_names())
    p.add_argument("--suite", metavar="FILE", help="held-out examples (JSON lines) as the regression suite")
    p.add_argument(
        "--config",
        metavar="JSON",
        help='other DeploymentConfig fields, e.g. \'{"epochs": 2, "stage": true}\'',
    )


def _options(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        options = json.loads(text)
    except ValueError:
        raise ValidationError("--config is not valid JSON") from None
    if not isinstance(options, dict):
        raise ValidationError(f"--config must be a JSON object, got {type(options).__name__}")
    return options


def _metrics_line(metrics: dict[str, Any]) -> str:
    acc = ", ".join(f"{t} {a:.3f}" for t, a in sorted(metrics.get("accuracy", {}).items()))
    lat = metrics.get("latency", {})
    return f"accuracy: {acc or '-'}; latency p50 {lat.get('p50_ms')} ms, p95 {lat.get('p95_ms')} ms"


def _init(args: argparse.Namespace) -> Report:
    from rehearsal.deployment.init import init_deployment
    from rehearsal.runner.handoff import run_handoff

    keys = keys_from_args(args)
    result = init_deployment(
        args.path,
        memory=args.memory,
        from_run=run_handoff(args.from_run, keys=keys) if args.from_run is not None else None,
        model=args.model,
        strategy=args.strategy,
        suite=args.suite,
        keys=keys,
        options=_options(args.config),
    )
    lines = [
        f"made deployment {args.path}: v{result.version} ({result.update})",
        _metrics_line(result.metrics),
        _suite_line(args, result.metrics),
    ]
    return Report({"path": args.path, **result.to_dict()}, lines)


def _suite_line(args: argparse.Namespace, metrics: dict[str, Any]) -> str:
    """Where the regression suite came from: said, because taking it from the memory moves entries."""
    held, kept = metrics.get("examples", 0), metrics.get("memory_entries", 0)
    if args.suite is not None:
        return f"regression suite: {held} examples from {args.suite}; the memory keeps all {kept} entries"
    if args.from_run is not None:
        return f"regression suite: the run's {held} test examples; the memory keeps all {kept} entries"
    return (
        f"regression suite: {held} entries moved out of the memory (held out, never trained on); "
        f"{kept} remain for training and replay (pass --suite FILE to keep them all)"
    )


def _blocked(args: argparse.Namespace, exc: UpdateBlockedError, data_file: str | None) -> Report:
    status = EXIT_NEEDS_APPROVAL if exc.decision == "needs-approval" else EXIT_FAIL
    data = {"blocked": True, "decision": exc.decision, "reasons": exc.reasons, "update": exc.update}
    key = f" --key-file {args.key_file}" if args.key_file else ""
    if exc.decision == "needs-approval" and data_file is None:  # a staged candidate waits for a person
        steps = [
            f"rehearsal approve {args.path} {exc.update} --approver NAME{key}",
            f"rehearsal promote {args.path}{key}",
        ]
        data["next"] = steps
        lines = [
            f"blocked: {exc}",
            "the candidate stays staged; to ship it, a person accepts the flags:",
            *steps,
            f"(or discard it: rehearsal rollback {args.path} VERSION{key})",
        ]
        return Report(data, lines, status=status)
    lines = [f"blocked: {exc}", "the deployed version is unchanged; the update's data left the memory"]
    if exc.decision == "needs-approval" and data_file is not None:
        steps = [
            f"rehearsal approve {args.path} {exc.update} --approver NAME{key}",
            f"rehearsal update {args.path} --data {data_file}{key}",
        ]
        data["next"] = steps
        lines += ["to ship it, a person accepts the flags, then the same data is sent again:", *steps]
    return Report(data, lines, status=status)


def _update_args(p: argparse.ArgumentParser) -> None:
    _dir_arg(p)
    p.add_argument(
        "--data", required=True, metavar="FILE", help="labelled examples (text, label, ...), .jsonl or .csv"
    )
    p.add_argument("--task", default="default", help="the task of lines that name none (default: default)")
    p.add_argument("--stage", action="store_true", default=None, help="stage a passing candidate for shadow")
    p.add_argument(
        "--online",
        action="store_true",
        help="a stream of small batches in file order: admitted batch by batch, gated every --gate-every",
    )
    p.add_argument("--batch-size", type=int, default=32, help="--online: examples per batch (default 32)")
    p.add_argument("--gate-every", type=int, default=4, help="--online: batches per gated update (default 4)")


def _update(args: argparse.Namespace) -> Report:
    from rehearsal.deployment.update import update

    if args.online:
        return _update_online(args)
    try:
        result = update(args.path, args.data, keys=keys_from_args(args), task=args.task, stage=args.stage)
    except UpdateBlockedError as exc:
        return _blocked(args, exc, args.data)
    what = f"v{result.version} deployed" if result.version is not None else "staged for shadow and promote"
    lines = [f"{result.update}: {what}", _metrics_line(result.metrics)]
    if result.novelty is not None:
        n = result.novelty
        lines.append(f"novelty {n['score']:.3f} (threshold {n['threshold']}): {n['decision']} {n['expert']}")
    preview = result.gate_preview
    if preview is not None and preview["decision"] != "pass":
        # Said now, not after the shadow: a candidate the suite already refuses is not worth canarying.
        codes = ", ".join(preview["codes"])
        verdict = preview["decision"]
        lines.append(f"the gate would decide {verdict} now ({codes}); promote decides after shadow")
    return Report({"path": args.path, **result.to_dict()}, lines)


def _update_online(args: argparse.Namespace) -> Report:
    from rehearsal.deployment.online_update import update_online

    if args.stage:
        raise ValidationError("--online gates each window itself; --stage is for one update at a time")
    done = update_online(
        args.path,
        args.data,
        batch_size=args.batch_size,
        gate_every=args.gate_every,
        keys=keys_from_args(args),
        task=args.task,
    )
    lines = [
        f"window {i + 1}: {r.update} -> v{r.version} ({_metrics_line(r.metrics)})"
        for i, r in enumerate(done.windows)
    ]
    data: dict[str, Any] = {
        "path": args.path,
        "examples": done.examples,
        "applied": done.applied,
        "windows": [r.to_dict() for r in done.windows],
        "blocked": done.blocked,
    }
    if done.blocked is None:
        lines.append(f"{done.examples} examples in {len(done.windows)} gated updates")
        return Report(data, lines)
    b = done.blocked
    lines.append(
        f"window {len(done.windows) + 1} (from example {b['first_example']}) was blocked ({b['decision']}): "
        + "; ".join(b["reasons"])
    )
    lines.append(f"{done.applied} of {done.examples} examples went in; fix or approve, then retry from there")
    status = EXIT_NEEDS_APPROVAL if b["decision"] == "needs-approval" else EXIT_FAIL
    return Report(data, lines, status=status)


def _shadow_args(p: argparse.ArgumentParser) -> None:
    _dir_arg(p)
    p.add_argument(
        "--requests", required=True, metavar="LOG", help="logged requests (text, label?): .jsonl or .csv"
    )
    p.add_argument("--canary", type=float, metavar="SHARE", help="route this share to the candidate instead")


def _arm_line(name: str, arm: dict[str, Any]) -> str:
    acc = "-" if arm["accuracy"] is None else f"{arm['accuracy']:.3f}"
    safety = "-" if arm["safety"] is None else f"{arm['safety']:.3f}"
    lat = arm["latency"]
    return (
        f"{name:<10} {arm['requests']:>5} requests  accuracy {acc}  safety {safety}  "
        f"p50 {lat['p50_ms']} ms  p95 {lat['p95_ms']} ms"
    )


def _shadow(args: argparse.Namespace) -> Report:
    from rehearsal.deployment.shadow import shadow

    report = shadow(args.path, args.requests, keys=keys_from_args(args), canary=args.canary)
    lines = [f"{report['mode']} of {report['update']} against v{report['current_version']}"]
    lines += [_arm_line("current", report["current"]), _arm_line("candidate", report["candidate"])]
    if report["agreement"] is not None:
        lines.append(f"agreement {report['agreement']:.3f}")
    for arm in ("current", "candidate"):
        tasks = report[arm]["per_task"]
        if tasks:
            cells = ", ".join(f"{t} {a}" for t, a in sorted(tasks.items()))
            lines.append(f"{arm} per task it knows: {cells}")
    return Report({"path": args.path, **report}, lines)


def _promote(args: argparse.Namespace) -> Report:
    from rehearsal.deployment.update import promote

    try:
        result = promote(args.path, keys=keys_from_args(args))
    except UpdateBlockedError as exc:
        return _blocked(args, exc, None)
    return Report({"path": args.path, **result.to_dict()}, [f"{result.update}: v{result.version} deployed"])


def _report_args(p: argparse.ArgumentParser) -> None:
    _dir_arg(p)
    p.add_argument("--out", metavar="FILE", help="where the page goes (default: DIR/report.html)")


def _report(args: argparse.Namespace) -> Report:
    from rehearsal.deployment.report import write_report

    page = write_report(args.path, out=args.out, keys=keys_from_args(args))
    return Report({"path": args.path, "report": str(page)}, [f"wrote {page}"])


def _predict_args(p: argparse.ArgumentParser) -> None:
    _dir_arg(p)
    p.add_argument("--data", required=True, metavar="FILE", help="requests (a 'text' column): .jsonl or .csv")
    p.add_argument("--out", metavar="FILE", help="write id, label, score, latency_ms here (.jsonl or .csv)")


def _predict(args: argparse.Namespace) -> Report:
    from rehearsal.deployment.predict import predict_requests

    result = predict_requests(args.path, args.data, keys=keys_from_args(args), out=args.out)
    lat = result["latency"]
    lines = [
        f"v{result['version']} answered {result['requests']} requests with {result['prediction']!r}: "
        f"p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms per request "
        f"(fit and warm-up {result['warmup_seconds']} s)"
    ]
    if result["out"] is not None:
        lines.append(f"wrote {result['out']}")
    else:
        lines += [f"{row['id']}\t{row['label']}\t{row['score']:.4f}" for row in result["answers"]]
    return Report({"path": args.path, **result}, lines)


def _migrate(args: argparse.Namespace) -> Report:
    from rehearsal.deployment.migrate import migrate_deployment
    from rehearsal.deployment.result import deployment_keys

    done = migrate_deployment(args.path, keys=deployment_keys(keys_from_args(args)))
    if not done["migrated"]:
        return Report(done, [f"{args.path} is bound already (identity {done['id']}): nothing to do"])
    line = f"bound {args.path} to identity {done['id']}: {done['versions']} versions checked and sealed"
    lines = [line]
    if done["dropped"]:
        lines.append(f"dropped the source run's version records {done['dropped']} (not this deployment's)")
    return Report(done, lines)


def _quiet(
    add_args: Callable[[argparse.ArgumentParser], None], run: Callable[[argparse.Namespace], Report]
) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], Report]]:
    """A verb that loads models, with ``--verbose``: without it, transformers' load reports and "newly
    initialized" warnings (one per model a verb loads: twice for a shadow) stay off the console."""

    def with_verbose(p: argparse.ArgumentParser) -> None:
        add_args(p)
        add_verbose_argument(p)

    def quietly(args: argparse.Namespace) -> Report:
        with quiet_libraries(args.verbose):
            return run(args)

    return with_verbose, quietly


def deploy_verbs() -> dict[str, Verb]:
    return {
        "init-deployment": Verb(
            "make a deployment from a model and a memory, or a run", *_quiet(_init_args, _init), False
        ),
        "update": Verb(
            "one governed update of a deployment from new labelled data",
            *_quiet(_update_args, _update),
            False,
        ),
        "shadow": Verb(
            "shadow or canary the staged candidate on logged requests", *_quiet(_shadow_args, _shadow), False
        ),
        "promote": Verb("govern and deploy the staged candidate", *_quiet(_dir_arg, _promote), False),
        "report": Verb("write the deployment's HTML report", _report_args, _report, False),
        "predict": Verb(
            "answer a file of requests with the deployed version", *_quiet(_predict_args, _predict), False
        ),
        "migrate-deployment": Verb(
            "check a deployment made before identities and bind its files to one", _dir_arg, _migrate, False
        ),
    }
