"""Continual-learning strategies as a registry: name -> an object the run loop asks for hooks.

The run loop (``rehearsal.stream``) never branches on a method's name. For each training phase it asks the
strategy for the phases of the stream, a data collator, Trainer callbacks, extra loss terms and whether
the phase's examples need vectors (replay) — and a new method (EWC, per-task LoRA) is one more class here::

    @register
    class EWC(Strategy):
        name = "ewc"
        def loss_terms(self, ctx): return [penalty_from(ctx)]

Replay strategies share one budget (``RunConfig.replay``); they differ only in ``ReplayConfig.mode``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rehearsal.crypto import KeyRing
from rehearsal.datasets import Task, TaskStream
from rehearsal.errors import ConfigError
from rehearsal.hf import RehearsalCallback, RehearsalCollator
from rehearsal.policies import AdmissionPolicy, ClassBalanced, KeepAll, Reservoir
from rehearsal.run_config import RunConfig
from rehearsal.trainer import LossTerm

__all__ = ["STRATEGIES", "PhaseContext", "Strategy", "get_strategy", "register"]


@dataclass
class PhaseContext:
    """Everything a strategy may need to set up one training phase."""

    config: RunConfig
    stream: TaskStream
    phase: int  # index of the phase in Strategy.phases(stream)
    tasks: tuple[Task, ...]  # the tasks whose training data this phase sees
    train: Any  # the phase's datasets.Dataset (tokenized; plus text/embedding/task columns if needs_vectors)
    tokenizer: Any
    base_collator: Callable[[list[dict[str, Any]]], Any]
    memory_path: Path
    keys: KeyRing | None
    current_classes: list[int]  # label ids of this phase's tasks
    seen_classes: list[int]  # label ids of every task trained so far, this phase's included


class Strategy:
    """Plain fine-tuning, task after task: the hooks' defaults. Subclasses override what they change."""

    name: ClassVar[str] = "naive"
    uses_memory: ClassVar[bool] = False

    def phases(self, stream: TaskStream) -> list[tuple[Task, ...]]:
        """The training phases: by default one per task, in stream order."""
        return [(task,) for task in stream.tasks]

    @property
    def needs_vectors(self) -> bool:
        """Whether the phase's dataset must carry text, vectors and task columns (for the collator)."""
        return self.uses_memory

    def collator(self, ctx: PhaseContext) -> Callable[[list[dict[str, Any]]], Any]:
        return ctx.base_collator

    def callbacks(self, ctx: PhaseContext, collator: Callable[..., Any]) -> list[Any]:
        return []

    def loss_terms(self, ctx: PhaseContext) -> list[LossTerm]:
        return []

    def marks_replay(self) -> bool:
        """Whether the collator adds the replay flag (then RehearsalTrainer pops it)."""
        return False

    def after_phase(self, model: Any, ctx: PhaseContext) -> dict[str, float]:
        """Called once a phase is trained, before evaluation; returns numbers worth logging.

        By default it applies ``config.calibration`` to the head: the phase's new classes against the
        classes of earlier phases.
        """
        from rehearsal.calibration import NEEDS_DATA, calibrate

        old = sorted(set(ctx.seen_classes) - set(ctx.current_classes))
        data = self.calibration_set(ctx) if ctx.config.calibration in NEEDS_DATA and old else None
        return calibrate(
            model,
            ctx.config.calibration,
            old_classes=old,
            new_classes=ctx.current_classes,
            data=data,
            tokenizer=ctx.tokenizer,
            max_length=ctx.config.max_length,
        )

    def calibration_set(self, ctx: PhaseContext) -> tuple[list[str], list[int]]:
        """A class-balanced (texts, labels) set over every class seen so far, for data-driven calibration."""
        raise ConfigError(
            f"calibration {ctx.config.calibration!r} needs a replay memory; method {self.name!r} keeps none"
        )


STRATEGIES: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ConfigError(f"unknown method {name!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[name]()


register(Strategy)


@register
class Multitask(Strategy):
    """The upper bound: one phase that trains on every task's data at once."""

    name = "multitask"

    def phases(self, stream: TaskStream) -> list[tuple[Task, ...]]:
        return [tuple(stream.tasks)]


def _policy(config: RunConfig) -> AdmissionPolicy:
    if config.policy == "keep_all":
        return KeepAll(config.memory_capacity)
    if config.memory_capacity is None:
        raise ConfigError(f"policy {config.policy!r} needs 'memory_capacity'")
    return (Reservoir if config.policy == "reservoir" else ClassBalanced)(config.memory_capacity)


# Bias correction fits two numbers per phase: 10 examples per seen class (450 at most on WordNet) are
# plenty, and one forward pass over them stays small beside a phase's training.
_CALIBRATION_PER_CLASS = 10


class _Replay(Strategy):
    """Replay from a memory that holds every past phase's training data (admitted after each phase)."""

    uses_memory = True
    mode: ClassVar[str] = "hybrid"

    def collator(self, ctx: PhaseContext) -> Callable[[list[dict[str, Any]]], Any]:
        replay = dataclasses.replace(
            ctx.config.replay,
            mode=self.mode,
            mark_replay=True,
            max_length=ctx.config.max_length,
            label_column="labels",
            seed=ctx.config.seed,
        )
        task = ctx.tasks[0].name if len(ctx.tasks) == 1 else None
        eligible = None if task is not None else {"task": {"$nin": [t.name for t in ctx.tasks]}}
        return RehearsalCollator(
            ctx.memory_path,
            ctx.base_collator,
            ctx.tokenizer,
            replay,
            keys=ctx.keys,
            task=task,
            eligible=eligible,
        )

    def callbacks(self, ctx: PhaseContext, collator: Callable[..., Any]) -> list[Any]:
        if not isinstance(collator, RehearsalCollator):
            raise ConfigError(f"{self.name!r} needs its RehearsalCollator, got {type(collator).__name__}")
        return [
            RehearsalCallback(
                ctx.memory_path,
                keys=ctx.keys,
                collator=collator,
                dataset=ctx.train,
                policy=_policy(ctx.config),
                seed=ctx.config.seed,
                label_column="labels",
            )
        ]

    def marks_replay(self) -> bool:
        return True

    def calibration_set(self, ctx: PhaseContext) -> tuple[list[str], list[int]]:
        """Up to ``_CALIBRATION_PER_CLASS`` memory entries per seen class (the memory holds this phase's
        examples too once the phase is trained), drawn with the run's seed and the phase."""
        import numpy as np

        from rehearsal.memory import RehearsalMemory

        rng = np.random.default_rng([ctx.config.seed, ctx.phase])
        with RehearsalMemory.open(ctx.memory_path, keys=ctx.keys, read_only=True) as memory:
            groups = memory.group_ids("label")
            ids: list[int] = []
            for label in sorted(ctx.seen_classes):
                members = groups.get(label, [])
                take = min(len(members), _CALIBRATION_PER_CLASS)
                ids.extend(int(i) for i in rng.choice(members, size=take, replace=False))
            labels = [int(row.label) for row in (memory.entries(ids)[i] for i in ids)]  # type: ignore[arg-type]
            return memory.get_texts(ids), labels


@register
class RandomReplay(_Replay):
    name = "random"
    mode = "random"


@register
class RetrievalReplay(_Replay):
    name = "retrieval"
    mode = "retrieval"


@register
class HybridReplay(_Replay):
    name = "hybrid"
    mode = "hybrid"
