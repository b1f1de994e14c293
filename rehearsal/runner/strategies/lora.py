"""LoRA run methods: the base model stays frozen and only low-rank adapters (and a head) train.

- ``lora-routed``: one adapter per task, each with its own copy of the classification head, trained on its
  task alone, so a new task cannot overwrite an old one. The run's memory stores every phase's examples
  (text, vector, ``task``) and is the router: after each phase a
  :class:`~rehearsal.methods.router.TaskGate` is fine-tuned on its contents (``lora.router = "gate"``), or
  inputs go by the k-NN vote of ``rehearsal.methods.adapters.AdapterRouter`` (``"knn"``). The chosen adapter
  predicts among its task's classes.
- ``lora-replay``: one adapter (and head) shared by every task, trained with hybrid replay.

Both save the adapters (``TaskAdapters.save``) as the phase checkpoint and rebuild the peft model on
resume from the base model plus that folder.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.errors import ConfigError
from rehearsal.methods.adapters import TaskAdapters, sequence_lora_config
from rehearsal.methods.inference import embed_texts, predict_labels
from rehearsal.methods.router import AdapterRouter, TaskGate, group_by_route
from rehearsal.runner.config import RunConfig
from rehearsal.runner.strategies.base import PhaseContext, Strategy, model_path, register
from rehearsal.runner.strategies.replay import HybridReplay

__all__ = ["LoRAReplay", "LoRARouted", "LoRAStrategy", "adapter_name", "lora_config_for"]

_GATE = "gate"  # the trained router's folder inside a phase's weights folder


def adapter_name(task: str) -> str:
    """A peft-safe adapter name for a task name (letters, digits, '_' and '-', starting with a letter)."""
    return "task_" + re.sub(r"[^A-Za-z0-9_-]", "_", task)[:58]


def lora_config_for(model: Any, config: RunConfig) -> Any:
    """peft ``LoraConfig`` of a run's ``[lora]`` table (see ``sequence_lora_config``)."""
    return sequence_lora_config(model, config.lora)


class LoRAStrategy(Strategy):
    """Holds the run's :class:`TaskAdapters`; subclasses choose which adapter a phase trains."""

    def __init__(self) -> None:
        self.adapters: TaskAdapters | None = None

    def adapter_for(self, ctx: PhaseContext) -> str:
        raise NotImplementedError

    def load_model(self, config: RunConfig, checkpoint: Path | None, num_labels: int) -> Any:
        from transformers import AutoModelForSequenceClassification

        base = AutoModelForSequenceClassification.from_pretrained(model_path(config), num_labels=num_labels)
        if checkpoint is None:
            self.adapters = TaskAdapters(base, lora_config_for(base, config))
            return base
        self.adapters = TaskAdapters.load(base, checkpoint, lora_config=lora_config_for(base, config))
        return self.adapters.model

    def save_model(self, model: Any, folder: Path) -> None:
        self._adapters().save(folder)

    def prepare_model(self, model: Any, ctx: PhaseContext) -> Any:
        adapters = self._adapters()
        name = self.adapter_for(ctx)
        if name not in adapters.adapters:
            adapters.add_task(name)
        adapters.activate(name)
        return adapters.model

    def _adapters(self) -> TaskAdapters:
        if self.adapters is None:
            raise ConfigError(f"{self.name!r}: load_model must run before the adapters are used")
        return self.adapters


@register
class LoRAReplay(LoRAStrategy, HybridReplay):
    name = "lora-replay"

    def adapter_for(self, ctx: PhaseContext) -> str:
        return "shared"


@register
class LoRARouted(LoRAStrategy):
    name = "lora-routed"
    uses_memory = True  # the memory is the router, not a replay source

    def __init__(self) -> None:
        super().__init__()
        self.gate: TaskGate | None = None

    def load_model(self, config: RunConfig, checkpoint: Path | None, num_labels: int) -> Any:
        model = super().load_model(config, checkpoint, num_labels)
        if checkpoint is not None and (checkpoint / _GATE).is_dir():
            self.gate = TaskGate.load(checkpoint / _GATE)
        return model

    def save_model(self, model: Any, folder: Path) -> None:
        super().save_model(model, folder)
        if self.gate is not None:
            self.gate.save(folder / _GATE)

    @property
    def needs_vectors(self) -> bool:
        return False  # the phase's batches carry no replay; after_phase embeds what it stores

    def adapter_for(self, ctx: PhaseContext) -> str:
        if len(ctx.tasks) != 1:
            n = len(ctx.tasks)
            raise ConfigError(f"{self.name!r} trains one adapter per task; this phase has {n} tasks")
        names = [adapter_name(t.name) for t in ctx.stream.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"task names {[t.name for t in ctx.stream.tasks]} give clashing adapter names")
        return adapter_name(ctx.tasks[0].name)

    def after_phase(self, model: Any, ctx: PhaseContext) -> dict[str, float]:
        """Store the phase's examples (text, vector, task, label) in the memory, retrain the gate on it, and
        log the routing accuracy on the test sets of the tasks trained so far. No head calibration: each
        adapter's head only ever scores its own task's classes."""

        examples = [ex for task in ctx.tasks for ex in task.train]
        texts = [ex.text for ex in examples]
        metadata = [{"task": ex.task, "label": ctx.stream.label_id(ex.label)} for ex in examples]
        memory = ctx.open_memory()
        memory.add(texts, metadata=metadata, vectors=embed_texts(texts, memory.encoder))
        if ctx.config.lora.router == "gate" and len(memory.group_ids("task")) >= 2:
            self.gate = TaskGate.from_memory(
                memory,
                base_model=model_path(ctx.config),
                epochs=ctx.config.lora.gate_epochs,
                max_length=ctx.config.max_length,
                seed=ctx.config.seed + ctx.phase,
            )
        trained = [t for t in ctx.stream.tasks if adapter_name(t.name) in self._adapters().tasks]
        test = [ex for task in trained for ex in task.test]
        if not test:
            return {}
        routes = self.routes(ctx, [ex.text for ex in test])
        hits = sum(route == ex.task for route, ex in zip(routes, test, strict=True))
        return {"routing_accuracy": hits / len(test)}

    def routes(self, ctx: PhaseContext, texts: Sequence[str]) -> list[str | None]:
        """The task each text is routed to (None where the memory gives no answer)."""

        trained = [t.name for t in ctx.stream.tasks if adapter_name(t.name) in self._adapters().tasks]
        if len(trained) == 1:
            return [trained[0]] * len(texts)  # one adapter: nothing to choose
        if ctx.config.lora.router == "gate":
            if self.gate is None:
                raise ConfigError(f"{self.name!r}: the gate is trained after a phase, before predictions")
            return [task for task, _ in self.gate.vote(texts)]
        memory = ctx.open_memory()
        router = AdapterRouter(memory, k=ctx.config.lora.route_k, threshold=0.0)
        return [task for task, _ in router.vote(embed_texts(texts, memory.encoder))]

    def predict(self, model: Any, ctx: PhaseContext, texts: Sequence[str]) -> np.ndarray:

        adapters = self._adapters()
        names = {adapter_name(t.name): t for t in ctx.stream.tasks}
        trained = {name: task for name, task in names.items() if name in adapters.tasks}
        out = np.empty(len(texts), dtype=np.int64)
        if not len(texts):
            return out
        fallback = adapter_name(ctx.tasks[-1].name)
        routes = [adapter_name(task) if task is not None else fallback for task in self.routes(ctx, texts)]
        routes = [r if r in trained else fallback for r in routes]
        active = adapters.active
        try:
            for name, rows in group_by_route(routes).items():
                adapters.activate(name, trainable=False)
                task = trained[name]
                out[rows] = predict_labels(
                    adapters.model,
                    ctx.tokenizer,
                    [texts[i] for i in rows],
                    batch_size=ctx.config.eval_batch_size,
                    max_length=ctx.config.max_length,
                    allowed=[ctx.stream.label_id(label) for label in task.labels],
                )
        finally:
            adapters.activate(active)
        return out
