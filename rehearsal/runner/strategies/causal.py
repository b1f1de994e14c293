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

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.errors import ConfigError
from rehearsal.runner.causal.collator import CompletionCollator
from rehearsal.runner.causal.evaluate import SkillScores, perplexity, score_skill
from rehearsal.runner.causal.model import causal_tokenizer, load_adapted, new_adapted
from rehearsal.runner.config import CAUSAL_METHODS, RunConfig
from rehearsal.runner.instructions import general_texts, instruction_of
from rehearsal.runner.strategies.base import Multitask, PhaseContext, Strategy, get_strategy
from rehearsal.runner.strategies.ewc import EWCReplay, EWCStrategy
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

    def after_phase(self, model: Any, ctx: PhaseContext) -> dict[str, float]:
        logs = super().after_phase(model, ctx)
        self.scores = measure_phase(model, ctx.tokenizer, ctx.config, ctx.stream.tasks)
        logs["general_perplexity"] = general_perplexity(model, ctx.tokenizer, ctx.config)
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


class CausalEWC(CausalLM, EWCStrategy):
    name = "ewc"


class CausalEWCReplay(CausalLM, EWCReplay):
    name = "ewc-replay"


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
        CausalEWC,
        CausalEWCReplay,
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
