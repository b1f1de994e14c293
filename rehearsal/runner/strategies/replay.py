"""Replay strategies: every phase's batches are topped up with old examples from the run's memory.

They share one budget (``RunConfig.replay``) and differ only in ``ReplayConfig.mode``; the memory holds
every past phase's training data (admitted after each phase through ``RunConfig.policy``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from rehearsal.errors import ConfigError
from rehearsal.memory.policies import AdmissionPolicy, make_policy
from rehearsal.methods.predictors.sample import memory_sample
from rehearsal.replay.callback import RehearsalCallback
from rehearsal.replay.collator import RehearsalCollator
from rehearsal.replay.trainer import LABELS
from rehearsal.runner.config import RunConfig
from rehearsal.runner.strategies.base import PhaseContext, Strategy, register

if TYPE_CHECKING:
    pass

__all__ = [
    "CoverageReplay",
    "DiverseReplay",
    "HybridReplay",
    "MIRReplay",
    "RandomReplay",
    "ReplayStrategy",
    "RetrievalReplay",
    "class_mean_seed",
    "memory_sample",
]


def _policy(config: RunConfig) -> AdmissionPolicy:
    if config.policy != "keep_all" and config.memory_capacity is None:
        raise ConfigError(f"policy {config.policy!r} needs 'memory_capacity'")
    return make_policy(config.policy, config.memory_capacity)


# Bias correction fits two numbers per phase: 10 examples per seen class (450 at most on WordNet) are
# plenty, and one forward pass over them stays small beside a phase's training.
_CALIBRATION_PER_CLASS = 10


class ReplayStrategy(Strategy):
    """Replay from a memory that holds every past phase's training data (admitted after each phase)."""

    uses_memory = True
    class_means_from_memory = True
    mode: ClassVar[str] = "hybrid"

    def collator(self, ctx: PhaseContext) -> Callable[[list[dict[str, Any]]], Any]:
        return self.replay_collator(ctx, RehearsalCollator)

    def replay_collator(
        self, ctx: PhaseContext, kind: type[RehearsalCollator], **extra: Any
    ) -> RehearsalCollator:
        """A ``kind`` collator over the run's memory with the run's replay budget and this method's mode,
        keeping the phase's own tasks out of replay; ``extra`` goes to ``kind``."""
        replay = dataclasses.replace(
            ctx.config.replay,
            mode=self.mode,
            mark_replay=True,
            max_length=ctx.config.max_length,
            label_column=LABELS,
            seed=ctx.config.seed,
        )
        task = ctx.tasks[0].name if len(ctx.tasks) == 1 else None
        eligible = None if task is not None else {"task": {"$nin": [t.name for t in ctx.tasks]}}
        return kind(
            ctx.open_memory(),
            ctx.base_collator,
            ctx.tokenizer,
            replay,
            task=task,
            eligible=eligible,
            **extra,
        )

    def callbacks(self, ctx: PhaseContext, collator: Callable[..., Any]) -> list[Any]:
        if not isinstance(collator, RehearsalCollator):
            raise ConfigError(f"{self.name!r} needs its RehearsalCollator, got {type(collator).__name__}")
        return [
            RehearsalCallback(
                ctx.open_memory(),
                collator=collator,
                dataset=ctx.train,
                policy=_policy(ctx.config),
                seed=ctx.config.seed,
                text_column=ctx.config.replay.text_column,
                vector_column=ctx.config.replay.vector_column,
                label_column=LABELS,
            )
        ]

    def marks_replay(self) -> bool:
        return True

    def calibration_set(self, ctx: PhaseContext) -> tuple[list[str], list[int]]:
        """Up to ``_CALIBRATION_PER_CLASS`` memory entries per seen class (the memory holds this phase's
        examples too once the phase is trained), drawn with the run's seed and the phase."""
        # The calibration draw's seed predates the class means' (kept so earlier runs reproduce).
        seed = [ctx.config.seed, ctx.phase]
        return memory_sample(ctx.open_memory(), ctx.seen_classes, _CALIBRATION_PER_CLASS, seed=seed)

    def class_mean_set(self, ctx: PhaseContext) -> tuple[list[str], list[int]]:
        """Up to ``prediction_per_class`` memory entries per seen class (all when None), drawn like the
        calibration set; the predictor over the memory is fitted on them."""
        seed = class_mean_seed(ctx.config.seed, ctx.phase)
        return memory_sample(ctx.open_memory(), ctx.seen_classes, ctx.config.prediction_per_class, seed=seed)


def class_mean_seed(seed: int, phase: int) -> list[int]:
    """The seed of phase ``phase``'s class-mean draw in a run seeded ``seed`` (also for a read-out
    from a finished run's saved weights: ``benchmarks/predictors.py``)."""
    return [seed, phase, 1]


@register
class RandomReplay(ReplayStrategy):
    name = "random"
    mode = "random"


@register
class RetrievalReplay(ReplayStrategy):
    name = "retrieval"
    mode = "retrieval"


@register
class HybridReplay(ReplayStrategy):
    name = "hybrid"
    mode = "hybrid"


@register
class MIRReplay(ReplayStrategy):
    """Maximally interfered retrieval: RehearsalTrainer (the run loop's trainer) ranks the pool."""

    name = "mir"
    mode = "mir"


@register
class CoverageReplay(ReplayStrategy):
    name = "coverage"
    mode = "coverage"


@register
class DiverseReplay(ReplayStrategy):
    name = "diverse"
    mode = "diverse"
