"""The configuration of a deployment (``deployment.json``'s ``config``): how each update trains.

Strategies (registered in ``rehearsal.deployment.strategies``, which ``strategy`` is checked against):

- ``adapter-replay`` (default): one LoRA adapter (with its own copy of the head) on a frozen base model,
  trained further by every update on the new data topped up with hybrid replay from the memory;
- ``ewc``: the whole model, trained by every update with hybrid replay and the online EWC penalty
  anchored at the current version;
- ``expert-growth``: LoRA experts routed by the memory's k-NN vote; an update whose data the novelty
  score (``rehearsal.methods.novelty``) calls novel gets a new expert and router entry and leaves the old
  experts as they are; otherwise it trains the expert its data routes to, with replay of that expert's
  tasks.

The head has ``max_labels`` outputs from the start, so new labels take the next free output instead of
reshaping the model; predictions are made over the labels the version knows.
"""

from __future__ import annotations

import dataclasses

from rehearsal.arithmetic import check_bf16_setting
from rehearsal.config import PREDICTOR_NAMES, ConfigMixin, EWCConfig, LoRAConfig, ReplayConfig, check_seed
from rehearsal.deployment.strategies import get_deployment_strategy
from rehearsal.errors import ConfigError
from rehearsal.governance.gate import GateConfig

__all__ = ["DeploymentConfig"]

# How expert-growth routes a request to an expert (a run's lora-routed adapters: ADAPTER_ROUTERS).
EXPERT_ROUTERS = ("knn", "probe")


def _number(name: str, value: object, low: float, high: float, *, open_low: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (low < v if open_low else low <= v) and v <= high
    if not ok:
        bounds = f"{'(' if open_low else '['}{low}, {high}]"
        raise ConfigError(f"{name!r} must be a number in {bounds}, got {value!r}")


@dataclasses.dataclass
class DeploymentConfig(ConfigMixin):
    """How a deployment's updates train, hold data back, and are gated (see the module docstring).

    ``heldout``: share of each update's examples (per task and label, at least one where a group has two)
    kept out of training as that task's regression suite; ``safety_tags``: the tags whose examples make up
    the safety-tagged accuracy and are replayed with priority; ``priority_share``: the share of each
    batch's replay drawn from the safety-tagged and rare-class entries (see
    ``rehearsal.deployment.priority``; 0 turns priority off), a label being rare below
    ``rare_label_share`` x the mean entries per label; ``stage``: a candidate that passes the gate waits
    for ``rehearsal promote`` (after ``rehearsal shadow``) instead of shipping at once;
    ``check_learning``: a new task the candidate answers no better than chance on its held-out examples
    needs approval (``rehearsal.deployment.evaluate.unlearned_tasks``); ``router``: how expert
    growth sends a request to an expert, ``knn`` (the vote of its ``route_k`` nearest memories, counted
    per expert) or ``probe`` (a linear classifier over the memory's vectors, refitted at each update on
    at most ``probe_per_task`` entries of each task; ``rehearsal.methods.task_probe``);
    ``prediction``: how a version answers, ``head`` (its classification head) or a predictor over the
    memory (``ncm``, ``knn``, ``lda``, ``local``: ``rehearsal.methods.predictors``) fitted, per expert, on up
    to ``prediction_per_class`` memory entries of each label it knows (None: all) when the version first
    answers; the gate, ``update``, ``shadow``, ``promote``, ``predict`` and the report all answer with it.
    An embedding-only memory has no text to fit on and answers with the head.
    ``bf16_training``: each training step's forward pass under CPU bf16 autocast (weights, optimiser and
    every answer stay fp32; ``rehearsal.replay.trainer``): about two thirds of a run's time where the CPU
    has native bf16 (benchmarks/RESULTS.md, issue 30); ``"auto"`` turns it on where the CPU has it; off by
    default, since it changes the arithmetic.
    """

    strategy: str = "adapter-replay"
    model: str | None = None
    max_labels: int = 32
    epochs: float = 3.0
    batch_size: int = 16
    eval_batch_size: int = 64
    learning_rate: float = 1e-3
    max_length: int = 64
    heldout: float = 0.2
    safety_tags: list[str] = dataclasses.field(default_factory=lambda: ["safety"])
    priority_share: float = 0.25
    rare_label_share: float = 0.5
    novelty_threshold: float = 0.85
    novelty_calibration: int = 500
    route_k: int = 16
    router: str = "knn"
    probe_per_task: int = 256
    stage: bool = False
    check_learning: bool = True
    bf16_training: bool | str = False
    prediction: str = "head"
    prediction_per_class: int | None = 50
    seed: int = 0
    replay: ReplayConfig = dataclasses.field(default_factory=ReplayConfig)
    ewc: EWCConfig = dataclasses.field(default_factory=EWCConfig)
    lora: LoRAConfig = dataclasses.field(default_factory=LoRAConfig)
    gate: GateConfig = dataclasses.field(default_factory=GateConfig)

    def __post_init__(self) -> None:
        for name, kind in (("replay", ReplayConfig), ("ewc", EWCConfig), ("lora", LoRAConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, kind.from_dict(getattr(self, name)))
        if isinstance(self.gate, dict):
            self.gate = GateConfig.from_dict(self.gate)
        if self.router not in EXPERT_ROUTERS:
            raise ConfigError(f"'router' must be one of {list(EXPERT_ROUTERS)}, got {self.router!r}")
        get_deployment_strategy(self.strategy)  # a name the registry does not know is refused
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ConfigError(f"'model' must be a model folder or None, got {self.model!r}")
        numbers = ("max_labels", "batch_size", "eval_batch_size", "max_length", "novelty_calibration")
        for name in (*numbers, "probe_per_task"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ConfigError(f"{name!r} must be an int >= 2, got {value!r}")
        _number("epochs", self.epochs, 0.0, 1000.0, open_low=True)
        _number("learning_rate", self.learning_rate, 0.0, 1.0, open_low=True)
        _number("heldout", self.heldout, 0.0, 0.9)
        _number("priority_share", self.priority_share, 0.0, 1.0)
        _number("rare_label_share", self.rare_label_share, 0.0, 1.0)
        _number("novelty_threshold", self.novelty_threshold, 0.0, 1.0)
        if isinstance(self.route_k, bool) or not isinstance(self.route_k, int) or self.route_k < 1:
            raise ConfigError(f"'route_k' must be an int >= 1, got {self.route_k!r}")
        tags = self.safety_tags
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise ConfigError(f"'safety_tags' must be a list of tag names, got {tags!r}")
        check_seed(self.seed)
        if self.prediction not in PREDICTOR_NAMES:
            raise ConfigError(f"'prediction' must be one of {list(PREDICTOR_NAMES)}, got {self.prediction!r}")
        per_class = self.prediction_per_class
        if per_class is not None and (
            isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1
        ):
            raise ConfigError(f"'prediction_per_class' must be a positive int or None, got {per_class!r}")
        check_bf16_setting("bf16_training", self.bf16_training)
        for flag in ("stage", "check_learning"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag!r} must be true or false, got {getattr(self, flag)!r}")
