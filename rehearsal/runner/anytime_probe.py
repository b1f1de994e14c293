"""Probing seen tasks while a model trains: one function for the online loop and a Trainer callback for
offline phases (any HF Trainer script can add it too).

A probe at step ``s`` measures every task of the trace whose first example arrived before step ``s``, on
its small fixed probe set (``rehearsal.runner.online_stream.probe_sets``), and records it in a
:class:`~rehearsal.runner.anytime.ProbeTrace`, from which ``rehearsal.runner.anytime`` computes A_AUC
and the stability gaps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rehearsal.methods.inference import predict_labels
from rehearsal.runner.anytime import ProbeTrace

__all__ = ["ProbeCallback", "probe_seen_tasks"]

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
    ``offset`` steps (and once when training begins, before the phase's first step)."""

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
            return  # already probed at this step (a phase's start is the last one's end)

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
