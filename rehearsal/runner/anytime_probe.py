"""Probing seen tasks while a model trains: one function for the online loop and a Trainer callback for
offline phases (any HF Trainer script can add it too).

A probe at step ``s`` measures every task of the trace whose first example arrived before step ``s``, on
its small fixed probe set (``rehearsal.runner.online_stream.probe_sets``), and records it in a
:class:`~rehearsal.runner.anytime.ProbeTrace`, from which ``rehearsal.runner.anytime`` computes A_AUC
and the stability gaps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rehearsal._files import write_json
from rehearsal.methods.inference import predict_labels
from rehearsal.runner.anytime import ProbeTrace, anytime_summary
from rehearsal.runner.online_stream import probe_sets
from rehearsal.runner.strategies import PhaseContext

__all__ = ["ANYTIME_FILE", "OfflineProbes", "ProbeCallback", "offline_probes", "probe_seen_tasks"]

Probes = Mapping[str, tuple[Sequence[str], Sequence[int]]]


def probe_seen_tasks(
    trace: ProbeTrace, step: int, probes: Probes, predict: Callable[[list[str]], np.ndarray]
) -> float:
    """Probe every task that began before ``step`` (one ``predict`` call over all their probe texts) and
    record it in ``trace``; returns the seconds it took."""
    began = time.perf_counter()
    seen = [
        name
        for name, start in zip(trace.task_names, trace.task_starts, strict=True)
        if start is not None and start < step
    ]
    texts = [text for name in seen for text in probes[name][0]]
    predicted = predict(texts) if texts else np.empty(0, dtype=np.int64)
    accuracy, at = {}, 0
    for name in seen:
        labels = np.asarray(probes[name][1])
        accuracy[name] = float(np.mean(predicted[at : at + len(labels)] == labels)) if len(labels) else 0.0
        at += len(labels)
    trace.record(step, accuracy)
    return time.perf_counter() - began


class ProbeCallback(TrainerCallback):
    """Probes ``trace``'s seen tasks every ``every`` optimizer steps of a run whose earlier phases took
    ``offset`` steps, and when training begins and ends."""

    def __init__(
        self,
        trace: ProbeTrace,
        probes: Probes,
        tokenizer: Any,
        *,
        every: int,
        offset: int = 0,
        batch_size: int = 64,
        max_length: int = 64,
    ) -> None:
        self.trace, self.probes, self.tokenizer = trace, probes, tokenizer
        self.every, self.offset = every, offset
        self.batch_size, self.max_length = batch_size, max_length
        self.seconds = 0.0
        self.last_step = offset  # the run's step count when training ended

    def _probe(self, model: Any, step: int) -> None:
        if self.trace.steps and self.trace.steps[-1] == step:
            # A phase's start is the last phase's end: the start's probe (after the head's calibration)
            # replaces the end's.
            self.trace.steps.pop()
            self.trace.accuracy.pop()

        def predict(texts: list[str]) -> np.ndarray:
            return predict_labels(
                model, self.tokenizer, texts, batch_size=self.batch_size, max_length=self.max_length
            )

        self.seconds += probe_seen_tasks(self.trace, step, self.probes, predict)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._probe(kwargs["model"], self.offset)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        step = self.offset + state.global_step
        if step % self.every == 0:
            self._probe(kwargs["model"], step)  # the Trainer puts the model back in train mode next step

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.last_step = self.offset + state.global_step
        self._probe(kwargs["model"], self.last_step)


ANYTIME_FILE = "anytime.json"


class OfflineProbes:
    """Anytime probes across the phases of an offline run (``streaming.probe_offline``), kept in the run
    folder's ``anytime.json`` with the steps each phase took, so the next phase (or a resumed run) goes
    on from them; a phase that starts again first drops what its earlier attempt recorded."""

    def __init__(self, ctx: PhaseContext) -> None:
        assert ctx.output_dir is not None  # INVARIANT: the run loop always gives a phase its folder
        self.path = ctx.output_dir / ANYTIME_FILE
        saved = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        self.phase_steps: list[int] = list(saved.get("phase_steps", []))[: ctx.phase]
        offset = sum(self.phase_steps)
        names = [t.name for t in ctx.stream.tasks]
        trace = ProbeTrace.from_dict(saved["trace"]) if "trace" in saved else ProbeTrace(names)
        keep = [i for i, step in enumerate(trace.steps) if step <= offset]
        trace.steps = [trace.steps[i] for i in keep]
        trace.accuracy = [trace.accuracy[i] for i in keep]
        earlier = {t.name for t in ctx.stream.tasks[: names.index(ctx.tasks[0].name)]}
        trace.task_starts = [
            s if n in earlier else None for n, s in zip(names, trace.task_starts, strict=True)
        ]
        for task in ctx.tasks:
            trace.start_task(task.name, offset)
        self.trace = trace
        self.seconds = float(saved.get("probe_seconds", 0.0)) if ctx.phase else 0.0
        c = ctx.config
        self.callback = ProbeCallback(
            trace,
            probe_sets(ctx.stream, c.streaming.probe_per_class),
            ctx.tokenizer,
            every=c.streaming.probe_every,
            offset=offset,
            batch_size=c.eval_batch_size,
            max_length=c.max_length,
        )
        self.title = f"{c.method} (seed {c.seed})"

    def finish(self) -> None:
        """Record the phase's steps; write ``anytime.json`` (trace and figures) and its plot."""
        from rehearsal.runner.plots import plot_probe_curve

        self.phase_steps.append(self.callback.last_step - self.callback.offset)
        self.seconds += self.callback.seconds
        last = sum(self.phase_steps)
        summary = anytime_summary(
            self.trace, correct=0, tested=0, last_step=last, probe_seconds=self.seconds, wall_seconds=0.0
        )
        figures = {
            k: v for k, v in summary.items() if k not in ("online_accuracy", "tested_examples", "probe_share")
        }
        write_json(self.path, {**figures, "phase_steps": self.phase_steps, "trace": self.trace.to_dict()})
        plot_probe_curve(self.trace, self.path.with_name("accuracy_anytime.png"), title=self.title)


def offline_probes(ctx: PhaseContext) -> OfflineProbes | None:
    """The phase's anytime probes when the run asks for them (``streaming.probe_offline``), else None."""
    return OfflineProbes(ctx) if ctx.config.streaming.probe_offline else None
