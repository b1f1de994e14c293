"""LoRA run methods: the base model stays frozen and only low-rank adapters (and a head) train.

- ``lora-routed``: one adapter per task, each with its own copy of the classification head, trained on its
  task alone, so a new task cannot overwrite an old one. The run's memory stores every phase's examples
  (vectors + ``task``) and, at evaluation, routes each input to an adapter by the k-NN vote of
  ``rehearsal.adapters.AdapterRouter``; the chosen adapter predicts among its own task's classes.
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

from rehearsal.adapters import TaskAdapters
from rehearsal.errors import ConfigError
from rehearsal.run_config import RunConfig
from rehearsal.strategies.base import PhaseContext, Strategy, model_path, register
from rehearsal.strategies.replay import HybridReplay

__all__ = ["LoRAReplay", "LoRARouted", "LoRAStrategy", "adapter_name", "lora_config_for"]

# Attention projections adapted by default, by model family (the first family whose names occur wins).
_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("c_attn",))


def adapter_name(task: str) -> str:
    """A peft-safe adapter name for a task name (letters, digits, '_' and '-', starting with a letter)."""
    return "task_" + re.sub(r"[^A-Za-z0-9_-]", "_", task)[:58]


def lora_config_for(model: Any, config: RunConfig) -> Any:
    """peft ``LoraConfig`` for sequence classification: ``config.lora`` on the model's attention, with the
    classification head trained and saved per adapter (``modules_to_save``)."""
    from peft import LoraConfig, TaskType

    from rehearsal.calibration import classification_head

    names = [name for name, _ in model.named_modules()]
    leaves = {name.rsplit(".", 1)[-1] for name in names}
    targets = config.lora.target_modules
    if targets is None:
        targets = next((list(t) for t in _TARGETS if set(t) <= leaves), None)
        if targets is None:
            raise ConfigError(
                f"cannot tell the attention projections of {type(model).__name__}; set lora.target_modules"
            )
    head = classification_head(model)
    head_name = next(name for name, module in model.named_modules() if module is head)
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=targets,
        modules_to_save=[head_name.rsplit(".", 1)[-1]],
    )


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

    @property
    def needs_vectors(self) -> bool:
        return False  # the phase's batches carry no replay; after_phase embeds what it stores

    def adapter_for(self, ctx: PhaseContext) -> str:
        if len(ctx.tasks) != 1:
            n = len(ctx.tasks)
            raise ConfigError(f"{self.name!r} trains one adapter per task; this phase has {n} tasks")
        return adapter_name(ctx.tasks[0].name)

    def after_phase(self, model: Any, ctx: PhaseContext) -> dict[str, float]:
        """Store the phase's examples (vectors, task, label) in the memory the router votes over. No head
        calibration: each adapter's head only ever scores its own task's classes."""
        from rehearsal.evaluation import embed_texts
        from rehearsal.memory import RehearsalMemory

        examples = [ex for task in ctx.tasks for ex in task.train]
        texts = [ex.text for ex in examples]
        metadata = [{"task": ex.task, "label": ctx.stream.label_id(ex.label)} for ex in examples]
        with RehearsalMemory.open(ctx.memory_path, keys=ctx.keys) as memory:
            memory.add(texts, metadata=metadata, vectors=embed_texts(texts))
        return {}

    def predict(self, model: Any, ctx: PhaseContext, texts: Sequence[str]) -> np.ndarray:
        from rehearsal.adapters import AdapterRouter, group_by_route
        from rehearsal.evaluation import embed_texts, predict_labels
        from rehearsal.memory import RehearsalMemory

        adapters = self._adapters()
        names = {adapter_name(t.name): t for t in ctx.stream.tasks}
        trained = {name: task for name, task in names.items() if name in adapters.tasks}
        out = np.empty(len(texts), dtype=np.int64)
        if not len(texts):
            return out
        with RehearsalMemory.open(ctx.memory_path, keys=ctx.keys, read_only=True) as memory:
            router = AdapterRouter(memory, k=ctx.config.lora.route_k, threshold=0.0)
            votes = router.vote(embed_texts(texts))
        fallback = adapter_name(ctx.tasks[-1].name)
        routes = [adapter_name(task) if task is not None else fallback for task, _ in votes]
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
