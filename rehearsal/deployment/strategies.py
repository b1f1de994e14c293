"""A deployment's strategies as a registry: ``get_deployment_strategy(name)`` -> how its versions train.

    adapter-replay   AdapterReplay   one LoRA adapter ``shared`` on a frozen base model, trained by every
                                     update on the new data with replay from the whole memory
    ewc              WholeModelEWC   the whole model, with replay and the online EWC penalty anchored at
                                     the current version (its state kept beside the version's weights)
    expert-growth    ExpertGrowth    LoRA experts routed over the memory; novel data grows a new one
                                     (``rehearsal.deployment.experts``)

The code around a deployment never compares ``config.strategy`` with a name: it asks the strategy. This
registry is the only list of the names; ``DeploymentConfig`` and the CLI's ``--strategy`` read it.
A new strategy subclasses :class:`DeploymentStrategy` and is ``@register``-ed. Torch-free: the
deployment's config imports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from rehearsal.deployment.experts import ALL, Part, PlanSettings, expert_name, grow_experts
from rehearsal.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

    from rehearsal.memory.facade import RehearsalMemory

__all__ = [
    "DEPLOYMENT_STRATEGIES",
    "SHARED",
    "AdapterReplay",
    "DeploymentStrategy",
    "ExpertGrowth",
    "WholeModelEWC",
    "deployment_strategy_names",
    "get_deployment_strategy",
    "register",
]

SHARED = "shared"  # the one adapter of AdapterReplay
_EWC_FILE = "ewc.pt"


class DeploymentStrategy:
    """What a deployment's strategy decides; the defaults are those of one set of weights that every
    update trains further (subclasses override what they change)."""

    name: ClassVar[str]
    # The adapter the first version trains (None: the whole model).
    first_adapter: ClassVar[str | None] = None
    # The whole model trains and is saved whole (no adapters on a frozen base).
    trains_whole_model: ClassVar[bool] = False
    # A version keeps its online EWC state beside its weights, the next update's penalty anchor.
    keeps_ewc_state: ClassVar[bool] = False
    # New labels train into the weights the old tasks share (rather than into weights of their own).
    new_labels_share_old_weights: ClassVar[bool] = True

    def first_experts(self, tasks: Iterable[str]) -> dict[str, list[str]]:
        """The first version's experts (expert adapter -> its tasks) for the memory's ``tasks``."""
        return {}

    def ewc_file(self, weights: Path) -> Path | None:
        """Where the version in ``weights`` keeps its EWC state (None: it keeps none)."""
        return weights / _EWC_FILE if self.keeps_ewc_state else None

    def plan(
        self,
        config: PlanSettings,
        memory: RehearsalMemory,
        experts: dict[str, list[str]],
        vectors: np.ndarray,
        tasks: Sequence[str],
    ) -> tuple[list[Part], dict[str, Any] | None]:
        """(parts, novelty details or None): the training plan for an update's examples of ``tasks`` (one
        per row of ``vectors``, (n, dim)); ``experts`` is the candidate's, updated in place when it grows.
        Here: ``first_adapter`` on every example, with replay from the whole memory."""
        return [Part(self.first_adapter, ALL, list(range(len(tasks))))], None


DEPLOYMENT_STRATEGIES: dict[str, type[DeploymentStrategy]] = {}


def register(cls: type[DeploymentStrategy]) -> type[DeploymentStrategy]:
    DEPLOYMENT_STRATEGIES[cls.name] = cls
    return cls


def deployment_strategy_names() -> tuple[str, ...]:
    """The registered names, in the order they were registered (the default first)."""
    return tuple(DEPLOYMENT_STRATEGIES)


def get_deployment_strategy(name: object) -> DeploymentStrategy:
    """The strategy registered as ``name``; :class:`ConfigError` naming the known ones otherwise."""
    if not isinstance(name, str) or name not in DEPLOYMENT_STRATEGIES:
        raise ConfigError(f"'strategy' must be one of {list(DEPLOYMENT_STRATEGIES)}, got {name!r}")
    return DEPLOYMENT_STRATEGIES[name]()


@register
class AdapterReplay(DeploymentStrategy):
    name = "adapter-replay"
    first_adapter = SHARED


@register
class WholeModelEWC(DeploymentStrategy):
    name = "ewc"
    trains_whole_model = True
    keeps_ewc_state = True


@register
class ExpertGrowth(DeploymentStrategy):
    name = "expert-growth"
    first_adapter = expert_name(0)
    new_labels_share_old_weights = False

    def first_experts(self, tasks: Iterable[str]) -> dict[str, list[str]]:
        return {expert_name(0): sorted(tasks)}

    def plan(
        self,
        config: PlanSettings,
        memory: RehearsalMemory,
        experts: dict[str, list[str]],
        vectors: np.ndarray,
        tasks: Sequence[str],
    ) -> tuple[list[Part], dict[str, Any] | None]:
        return grow_experts(config, memory, experts, vectors, tasks)
