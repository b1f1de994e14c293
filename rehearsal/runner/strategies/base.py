"""The strategy protocol (the run loop's hooks), its registry, and the two strategies without state.

The run loop (``rehearsal.runner.loop``) never branches on a method's name. It asks the strategy to load and
save the model, for the phases of the stream, and per phase for the model to train, a data collator,
Trainer callbacks, extra loss terms, what to do once the phase is trained, and how to predict labels.
A new method is one more registered class (see ``rehearsal.runner.strategies.ewc`` and ``.lora``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rehearsal.arithmetic import wants_bf16
from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import default_model_path
from rehearsal.errors import ConfigError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.calibration import NEEDS_DATA, calibrate, classification_head
from rehearsal.methods.inference import predict_labels
from rehearsal.replay.trainer import LossTerm
from rehearsal.runner.config import METHODS, RunConfig
from rehearsal.runner.tasks import Task, TaskStream

if TYPE_CHECKING:
    from rehearsal.methods.predictors import FeaturePredictor

__all__ = ["STRATEGIES", "PhaseContext", "Strategy", "get_strategy", "read_out_names", "register"]


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
    output_dir: Path | None = None  # the run's folder, for state a strategy keeps between phases
    memory: RehearsalMemory | None = None  # the phase's one open handle on the run's memory (if it keeps one)

    def open_memory(self) -> RehearsalMemory:
        """The phase's memory handle; a strategy that keeps a memory is always given one."""
        if self.memory is None:
            raise ConfigError("this strategy uses the run's memory, and the phase was given none")
        return self.memory

    def state_dir(self, name: str) -> Path:
        """``output_dir/name`` (created): where a strategy keeps its own state between phases."""
        if self.output_dir is None:
            raise ConfigError("this strategy keeps state between phases and needs the run's output_dir")
        folder = self.output_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder


class Strategy:
    """Plain fine-tuning, task after task: the hooks' defaults. Subclasses override what they change."""

    name: ClassVar[str] = "naive"
    uses_memory: ClassVar[bool] = False
    # Whether the run's memory keeps the examples' (encrypted) text; False makes it embedding-only.
    stores_text: ClassVar[bool] = True
    # Whether the memory holds examples of every seen class to fit a predictor on (prediction != "head").
    class_means_from_memory: ClassVar[bool] = False
    # Fitted after each phase for the run's prediction and read-outs other than the head (prediction first).
    predictors: dict[str, FeaturePredictor] = {}  # noqa: RUF012  (replaced, never mutated, per instance)

    # -- the model: loaded once per run, saved after every phase --------------------------------
    def load_model(self, config: RunConfig, checkpoint: Path | None, num_labels: int) -> Any:
        """The model to train: ``checkpoint`` (the last completed phase's save) or else the base model."""
        from transformers import AutoModelForSequenceClassification

        source = str(checkpoint) if checkpoint is not None else model_path(config)
        return AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels)

    def save_model(self, model: Any, folder: Path) -> None:
        """Write what :meth:`load_model` reads back as ``checkpoint``."""
        model.save_pretrained(folder)

    def prepare_model(self, model: Any, ctx: PhaseContext) -> Any:
        """The model the phase's Trainer trains (a strategy may wrap it or switch adapters)."""
        return model

    def predict(self, model: Any, ctx: PhaseContext, texts: Sequence[str]) -> np.ndarray:
        """Predicted label ids of ``texts`` after a phase: by default the argmax over every class of the
        head; with another ``prediction``, the predictor fitted on the memory after the phase."""
        if ctx.config.prediction == "head":
            return self._head_predict(model, ctx, texts)
        return self.predict_all(model, ctx, texts)[ctx.config.prediction]

    def predict_all(self, model: Any, ctx: PhaseContext, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """``{"head": ..., prediction: ..., readout: ...}``: the labels of ``texts`` by the head, the run's
        predictor and every extra read-out, from one forward pass (the head applied to the features is the
        model's logits)."""
        names = read_out_names(ctx.config)
        if names == ["head"]:
            return {"head": self.predict(model, ctx, texts)}  # a strategy may predict its own way (routing)
        from rehearsal.methods.predictors import make_predictor

        missing = [n for n in names if n != "head" and n not in self.predictors]
        if missing:
            raise ConfigError(f"prediction {missing[0]!r} needs the predictor fitted after the phase")
        features = _features(model, ctx, texts)
        head = make_predictor("head")
        head.fit(features, [0] * len(features), head=classification_head(model))
        return {
            "head": head.predict(features),
            **{n: p.predict(features) for n, p in self.predictors.items()},
        }

    def _head_predict(self, model: Any, ctx: PhaseContext, texts: Sequence[str]) -> np.ndarray:
        with eval_arithmetic(ctx.config):
            return predict_labels(
                model,
                ctx.tokenizer,
                texts,
                batch_size=ctx.config.eval_batch_size,
                max_length=ctx.config.max_length,
                by_length=ctx.config.length_sorted_eval,
            )

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

        old = sorted(set(ctx.seen_classes) - set(ctx.current_classes))
        data = self.calibration_set(ctx) if ctx.config.calibration in NEEDS_DATA and old else None
        logs = calibrate(
            model,
            ctx.config.calibration,
            old_classes=old,
            new_classes=ctx.current_classes,
            data=data,
            tokenizer=ctx.tokenizer,
            max_length=ctx.config.max_length,
        )
        if read_out_names(ctx.config) != ["head"]:
            self.fit_predictor(model, ctx)
        return logs

    def fit_predictor(self, model: Any, ctx: PhaseContext) -> None:
        """Fit the run's predictor and every extra read-out over the memory on the memory's examples of every
        seen class, from the model as trained so far (one forward pass for all of them)."""
        from rehearsal.methods.predictors import make_predictor

        texts, labels = self.class_mean_set(ctx)
        features = _features(model, ctx, texts)
        self.predictors = {}
        for name in read_out_names(ctx.config):
            if name == "head":
                continue
            predictor = make_predictor(name)
            predictor.fit(features, labels, head=classification_head(model) if predictor.needs_head else None)
            self.predictors[name] = predictor

    @property
    def predictor(self) -> FeaturePredictor | None:
        """The run's own predictor over the memory (None before the first fit or for ``head``)."""
        return next(iter(self.predictors.values()), None) if self.predictors else None

    def class_mean_set(self, ctx: PhaseContext) -> tuple[list[str], list[int]]:
        """(texts, labels) of every seen class to fit a predictor over the memory on."""
        raise ConfigError(
            f"prediction {ctx.config.prediction!r} needs a replay memory; method {self.name!r} keeps none"
        )

    def calibration_set(self, ctx: PhaseContext) -> tuple[list[str], list[int]]:
        """A class-balanced (texts, labels) set over every class seen so far, for data-driven calibration."""
        raise ConfigError(
            f"calibration {ctx.config.calibration!r} needs a replay memory; method {self.name!r} keeps none"
        )

    # -- what the run loop asks besides training: the text pipeline and the score of a test set ------
    def load_tokenizer(self, config: RunConfig) -> Any:
        """The tokenizer of the run's model."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_path(config))

    def base_collator(self, tokenizer: Any, config: RunConfig) -> Callable[[list[dict[str, Any]]], Any]:
        """The collator that pads a batch (replay collators wrap it)."""
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def score(self, model: Any, ctx: PhaseContext, task: Task) -> dict[str, np.ndarray]:
        """Per read-out (the head, and the run's predictor when it has one), how right each of ``task``'s
        test examples comes out after a phase: (n,) float in [0, 1], 1.0 or 0.0 for a predicted label (a
        strategy that writes answers gives them partial credit: ``strategies.causal``)."""
        if not task.test:
            return {name: np.zeros(0) for name in read_out_names(ctx.config)}
        labels = np.asarray([ctx.stream.label_id(ex.label) for ex in task.test])
        predicted = self.predict_all(model, ctx, [ex.text for ex in task.test])
        return {name: np.asarray(p == labels, dtype=float) for name, p in predicted.items()}


def _features(model: Any, ctx: PhaseContext, texts: Sequence[str]) -> Any:
    """(n, d): what the model's head receives for ``texts`` (``rehearsal.methods.predictors``)."""
    from rehearsal.methods.predictors import encoder_features

    config = ctx.config
    with eval_arithmetic(config):
        return encoder_features(
            model,
            ctx.tokenizer,
            texts,
            batch_size=config.eval_batch_size,
            max_length=config.max_length,
            by_length=config.length_sorted_eval,
        )


def eval_arithmetic(config: RunConfig) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on the CPU for evaluation and predictor features when ``bf16_eval`` asks for it (the
    outputs come back float32); otherwise nothing changes."""
    if not wants_bf16(config.bf16_eval):
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


def read_out_names(config: RunConfig) -> list[str]:
    """The read-outs a run records after each phase: its prediction first, then the head and the extra
    ``readouts``, each once."""
    return list(dict.fromkeys([config.prediction, "head", *config.readouts]))


STRATEGIES: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    if cls.name not in METHODS:
        raise ConfigError(f"strategy {cls.name!r} is not among the run methods {list(METHODS)}")
    STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ConfigError(f"unknown method {name!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[name]()


def model_path(config: RunConfig) -> str:
    """The base model a run starts from: ``config.model``, else the packaged MiniLM."""

    return str(config.model or default_model_path())


register(Strategy)


@register
class Multitask(Strategy):
    """The upper bound: one phase that trains on every task's data at once."""

    name = "multitask"

    def phases(self, stream: TaskStream) -> list[tuple[Task, ...]]:
        return [tuple(stream.tasks)]
