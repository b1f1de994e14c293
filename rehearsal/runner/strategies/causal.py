"""The run methods for a causal LM (``model_kind = "causal-lm"``): each is the classifier run's method of the
same name with the model side swapped (``CausalLM``), so replay, admission, EWC and the phases stay theirs.

- the model is the base causal LM under one LoRA adapter (``rehearsal.runner.causal.model``); a phase saves
  the adapter, a resume loads base + adapter;
- batches are labelled for the answer only (``CompletionCollator``), replayed rows like new ones;
- after each phase every skill's test items are answered greedily and scored (``causal.evaluate``); the
  accuracy matrix holds the mean token-F1, the phase's logs the exact match, answer loss and token-F1 of
  every skill and the perplexity of the held-out general text (before training too, in phase 0's logs).

:data:`CAUSAL_STRATEGIES` is the only list of them; ``RunConfig`` validates against
``rehearsal.runner.config.CAUSAL_METHODS`` and a test holds the two together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.errors import ConfigError
from rehearsal.methods.adapters import TaskAdapters
from rehearsal.methods.inference import embed_texts
from rehearsal.methods.router import AdapterRouter, group_by_route
from rehearsal.runner.causal.collator import CompletionCollator
from rehearsal.runner.causal.evaluate import (
    SkillScores,
    exact_match,
    merge_scores,
    perplexity,
    score_skill,
    text_nll,
)
from rehearsal.runner.causal.model import (
    base_causal_lm,
    causal_lora_config,
    causal_tokenizer,
    load_adapted,
    new_adapted,
)
from rehearsal.runner.causal.self_rehearsal import SelfRehearsalCollator, own_answers
from rehearsal.runner.config import CAUSAL_METHODS, RunConfig
from rehearsal.runner.instructions import general_texts, instruction_of
from rehearsal.runner.strategies.base import Multitask, PhaseContext, Strategy, get_strategy
from rehearsal.runner.strategies.ewc import EWCMixin, EWCReplay, EWCStrategy
from rehearsal.runner.strategies.lora import adapter_name
from rehearsal.runner.strategies.replay import (
    CoverageReplay,
    DiverseReplay,
    HybridReplay,
    RandomReplay,
    RetrievalReplay,
)
from rehearsal.runner.tasks import Task

__all__ = ["CAUSAL_STRATEGIES", "CausalLM", "measure_phase", "strategy_for"]


def measure_phase(
    model: Any, tokenizer: Any, config: RunConfig, tasks: Sequence[Task]
) -> dict[str, SkillScores]:
    """Every task's skill scores: what a phase records, and what a saved adapter's read-out recomputes."""
    return {
        task.name: score_skill(
            model,
            tokenizer,
            [instruction_of(ex.text) for ex in task.test],
            max_length=config.max_length,
            batch_size=config.eval_batch_size,
        )
        for task in tasks
    }


def general_perplexity(model: Any, tokenizer: Any, config: RunConfig) -> float:
    return perplexity(
        model, tokenizer, general_texts(), max_length=config.max_length, batch_size=config.eval_batch_size
    )


class CausalLM(Strategy):
    """The model side of a causal-LM run; put first in a method's bases (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.scores: dict[str, SkillScores] = {}
        self.base_perplexity: float | None = None

    def load_tokenizer(self, config: RunConfig) -> Any:
        return causal_tokenizer(config.model)

    def base_collator(self, tokenizer: Any, config: RunConfig) -> Callable[[list[dict[str, Any]]], Any]:
        return CompletionCollator(tokenizer, max_length=config.max_length)

    def load_model(self, config: RunConfig, checkpoint: Path | None, num_labels: int) -> Any:
        if checkpoint is None:
            return new_adapted(config.model, config.lora)
        return load_adapted(config.model, checkpoint)

    def save_model(self, model: Any, folder: Path) -> None:
        model.save_pretrained(str(folder))

    def prepare_model(self, model: Any, ctx: PhaseContext) -> Any:
        model = super().prepare_model(model, ctx)
        if ctx.phase == 0:
            # The adapter starts as a no-op: this is the base model's perplexity, the drift's zero.
            self.base_perplexity = general_perplexity(model, ctx.tokenizer, ctx.config)
        return model

    def measure(self, model: Any, ctx: PhaseContext) -> tuple[dict[str, SkillScores], float]:
        """Every skill's scores and the general text's perplexity, as the phase leaves the model."""
        scores = measure_phase(model, ctx.tokenizer, ctx.config, ctx.stream.tasks)
        return scores, general_perplexity(model, ctx.tokenizer, ctx.config)

    def after_phase(self, model: Any, ctx: PhaseContext) -> dict[str, float]:
        logs = super().after_phase(model, ctx)
        self.scores, logs["general_perplexity"] = self.measure(model, ctx)
        if self.base_perplexity is not None:
            logs["general_perplexity_base"] = self.base_perplexity
        for name, s in self.scores.items():
            logs[f"exact/{name}"] = float(s.exact.mean()) if len(s.exact) else 0.0
            logs[f"f1/{name}"] = float(s.f1.mean()) if len(s.f1) else 0.0
            logs[f"answer_loss/{name}"] = s.answer_loss
        return logs

    def score(self, model: Any, ctx: PhaseContext, task: Task) -> dict[str, np.ndarray]:
        """Token-F1 of each test item, measured in :meth:`after_phase` on the same weights."""
        if task.name not in self.scores:
            raise ConfigError(f"{self.name!r}: the skills are measured after a phase, before they are scored")
        f1 = self.scores[task.name].f1
        return {"head": f1, ctx.config.prediction: f1}

    def predict(self, model: Any, ctx: PhaseContext, texts: Sequence[str]) -> np.ndarray:
        raise ConfigError("a causal-LM run answers prompts; it predicts no class labels")


class CausalNaive(CausalLM, Strategy):
    name = "naive"


class CausalMultitask(CausalLM, Multitask):
    name = "multitask"


class CausalRandom(CausalLM, RandomReplay):
    name = "random"


class CausalRetrieval(CausalLM, RetrievalReplay):
    name = "retrieval"


class CausalHybrid(CausalLM, HybridReplay):
    name = "hybrid"


class CausalCoverage(CausalLM, CoverageReplay):
    name = "coverage"


class CausalDiverse(CausalLM, DiverseReplay):
    name = "diverse"


class CausalSelfRehearsal(CausalLM, RandomReplay):
    """Random replay of old skills' prompts with the model's own answers, written before each phase by the
    model as the previous phase left it (``rehearsal.runner.causal.self_rehearsal``). The phase logs
    count the answers written (``self_answers``) and their share that match the stored reference answer
    exactly (``self_answers_exact``): how much of an old skill the model still had to hand down."""

    name = "self-rehearsal"

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[int, str] = {}
        self.answer_logs: dict[str, float] = {}

    def prepare_model(self, model: Any, ctx: PhaseContext) -> Any:
        model = super().prepare_model(model, ctx)
        current = {t.name for t in ctx.tasks}
        memory = ctx.open_memory()
        old = sorted(set(memory.group_ids("task")) - current)
        self.answers = own_answers(
            model, ctx.tokenizer, memory, old_tasks=old, batch_size=ctx.config.eval_batch_size
        )
        stored = memory.texts_by_id(sorted(self.answers))
        same = sum(exact_match(self.answers[i], [stored[i]]) for i in self.answers if i in stored)
        self.answer_logs = {
            "self_answers": float(len(self.answers)),
            "self_answers_exact": same / len(self.answers) if self.answers else 0.0,
        }
        model.train()
        return model

    def collator(self, ctx: PhaseContext) -> Callable[[list[dict[str, Any]]], Any]:
        return self.replay_collator(ctx, SelfRehearsalCollator, answers=self.answers)

    def after_phase(self, model: Any, ctx: PhaseContext) -> dict[str, float]:
        return {**super().after_phase(model, ctx), **self.answer_logs}


class CausalEWCState(EWCMixin):
    """Put ahead of ``CausalLM``, whose load and save end their chains, so the EWC state is saved with
    the adapter weights and taken up from them (``EWCMixin``'s own overrides come after it)."""

    def load_model(self, config: RunConfig, checkpoint: Path | None, num_labels: int) -> Any:
        model = super().load_model(config, checkpoint, num_labels)
        self.restore_state(checkpoint)
        return model

    def save_model(self, model: Any, folder: Path) -> None:
        super().save_model(model, folder)
        self.save_state(folder)


class CausalEWC(CausalEWCState, CausalLM, EWCStrategy):
    name = "ewc"


class CausalEWCReplay(CausalEWCState, CausalLM, EWCReplay):
    name = "ewc-replay"


class CausalRouted(CausalLM, Strategy):
    """One LoRA adapter per skill, each trained on its skill alone. The run's memory holds every phase's
    training texts with their skill and routes each prompt (the prompt alone, never its answer) to an
    adapter by the k-NN vote of its ``lora.route_k`` nearest texts (``AdapterRouter``); the general text
    is routed the same way. ``routing_accuracy`` in the phase logs is the share of the trained skills'
    test prompts that reach their own adapter."""

    name = "lora-routed"
    uses_memory = True  # the memory is the router, not a replay source

    def __init__(self) -> None:
        super().__init__()
        self.adapters: TaskAdapters | None = None
        self.routing_accuracy: float | None = None

    @property
    def needs_vectors(self) -> bool:
        return False  # no replay in the batches; after_phase embeds what it stores

    def load_model(self, config: RunConfig, checkpoint: Path | None, num_labels: int) -> Any:
        base, _ = base_causal_lm(config.model)
        lora = causal_lora_config(base, config.lora)
        if checkpoint is None:
            self.adapters = TaskAdapters(base, lora)
            return base
        self.adapters = TaskAdapters.load(base, checkpoint, lora_config=lora)
        return self.adapters.model

    def save_model(self, model: Any, folder: Path) -> None:
        self._adapters().save(folder)

    def prepare_model(self, model: Any, ctx: PhaseContext) -> Any:
        if len(ctx.tasks) != 1:
            raise ConfigError(f"{self.name!r} trains one adapter per skill; this phase has {len(ctx.tasks)}")
        adapters, name = self._adapters(), adapter_name(ctx.tasks[0].name)
        if name not in adapters.adapters:
            adapters.add_task(name)
        adapters.activate(name)
        return super().prepare_model(adapters.model, ctx)

    def after_phase(self, model: Any, ctx: PhaseContext) -> dict[str, float]:
        texts = [ex.text for task in ctx.tasks for ex in task.train]
        metadata = [
            {"task": ex.task, "label": ctx.stream.label_id(ex.label)} for t in ctx.tasks for ex in t.train
        ]
        memory = ctx.open_memory()
        memory.add(texts, metadata=metadata, vectors=embed_texts(texts, memory.encoder))
        logs = super().after_phase(model, ctx)
        if self.routing_accuracy is not None:
            logs["routing_accuracy"] = self.routing_accuracy
        return logs

    def routes(self, ctx: PhaseContext, texts: Sequence[str]) -> list[str]:
        """The adapter each text goes to (the newest skill's where the memory gives no answer)."""
        trained = self._adapters().tasks
        memory = ctx.open_memory()
        router = AdapterRouter(memory, k=ctx.config.lora.route_k, threshold=0.0, fallback=trained[-1])
        routed = router.route(embed_texts(list(texts), memory.encoder))
        return [adapter_name(r) if adapter_name(r) in trained else trained[-1] for r in routed]

    def measure(self, model: Any, ctx: PhaseContext) -> tuple[dict[str, SkillScores], float]:
        adapters, config, tokenizer = self._adapters(), ctx.config, ctx.tokenizer
        active, scores, hits, asked = adapters.active, {}, 0, 0
        try:
            for task in ctx.stream.tasks:
                items = [instruction_of(ex.text) for ex in task.test]
                routes = self.routes(ctx, [item.prompt for item in items])
                if adapter_name(task.name) in adapters.tasks:
                    hits += sum(r == adapter_name(task.name) for r in routes)
                    asked += len(routes)
                parts = []
                for name, rows in group_by_route(routes).items():
                    adapters.activate(name, trainable=False)
                    chosen = [items[i] for i in rows]
                    parts.append(
                        (
                            rows,
                            score_skill(
                                adapters.model,
                                tokenizer,
                                chosen,
                                max_length=config.max_length,
                                batch_size=config.eval_batch_size,
                            ),
                        )
                    )
                scores[task.name] = merge_scores(parts, len(items))
            general = general_texts()
            total, count = 0.0, 0
            for name, rows in group_by_route(self.routes(ctx, general)).items():
                adapters.activate(name, trainable=False)
                nll, n = text_nll(
                    adapters.model,
                    tokenizer,
                    [general[i] for i in rows],
                    max_length=config.max_length,
                    batch_size=config.eval_batch_size,
                )
                total, count = total + nll, count + n
        finally:
            adapters.activate(active)
        self.routing_accuracy = hits / asked if asked else None
        return scores, math.exp(total / max(count, 1))

    def _adapters(self) -> TaskAdapters:
        if self.adapters is None:
            raise ConfigError(f"{self.name!r}: load_model must run before the adapters are used")
        return self.adapters


CAUSAL_STRATEGIES: dict[str, type[CausalLM]] = {
    cls.name: cls
    for cls in (
        CausalNaive,
        CausalMultitask,
        CausalRandom,
        CausalRetrieval,
        CausalHybrid,
        CausalCoverage,
        CausalDiverse,
        CausalSelfRehearsal,
        CausalEWC,
        CausalEWCReplay,
        CausalRouted,
    )
}
if set(CAUSAL_STRATEGIES) != set(CAUSAL_METHODS):  # pragma: no cover - a test holds them together
    raise ConfigError(
        f"causal strategies {sorted(CAUSAL_STRATEGIES)} != CAUSAL_METHODS {sorted(CAUSAL_METHODS)}"
    )


def strategy_for(config: RunConfig) -> Strategy:
    """The strategy of a run: the method's causal-LM variant when ``model_kind`` is ``"causal-lm"``."""
    if config.model_kind != "causal-lm":
        return get_strategy(config.method)
    if config.method not in CAUSAL_STRATEGIES:
        raise ConfigError(
            f"model_kind 'causal-lm' runs methods {sorted(CAUSAL_STRATEGIES)}, got {config.method!r}"
        )
    return CAUSAL_STRATEGIES[config.method]()
