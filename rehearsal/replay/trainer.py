"""A thin ``Trainer`` subclass for losses that treat replay rows apart from new rows.

The collator marks each row (``ReplayConfig(mark_replay=True)`` adds an ``is_replay`` 0/1 feature);
:class:`RehearsalTrainer` pops that feature before the forward pass and computes the loss itself:

- ``loss="ce"``: plain cross-entropy over every class of the head (or, with ``mask_unseen``, over the
  classes seen so far: a class no task has shown yet cannot be the answer, so its logit is not pushed).
- ``loss="asymmetric"`` (ER-ACE, Caccia et al. 2022): new rows compete only among the current task's
  classes, so learning a new task does not push old classes' logits down; replay rows compete among every
  class seen so far, which is where old and new classes are told apart.
- ``loss="separated"`` (the separated softmax of SS-IL, Ahn et al. 2021): new rows compete among the
  current task's classes, replay rows among the old classes only, so neither kind of row pushes the other
  kind's logits down; a row's own label always stays in its softmax (tasks that share labels).

With ``ReplayConfig(mode="mir")`` the collator sends a pool of candidates (flagged ``REPLAY_CANDIDATE``);
``training_step`` ranks them by how much one virtual SGD step on the new rows raises their loss
(``rehearsal.replay.interference``) and trains on the new rows plus the top ones. A plain ``Trainer``
cannot do that, so the collator refuses to run MIR without this trainer attached.

Extra terms (a regulariser such as EWC) plug in as callables ``model -> scalar tensor`` added to the loss.

``head_learning_rate`` gives the classification head its own learning rate: the head of a pretrained
encoder starts from random weights and, with a few dozen steps per task, learns too slowly at the body's
rate for a new task's classes to overtake the old ones (lost plasticity).

``calibration="weight_aligning"`` rescales the current classes' head rows to the old rows' mean norm once
training ends (``rehearsal.methods.calibration``), so the newest classes stop winning every argmax. With
``mask_unseen`` or a calibration and no class sets given, the trainer reads them from the data when
training begins: the current classes from the training set's labels, the old ones from the replay
memory's (through the collator). These three are what made class-incremental ``rehearsal run`` work.

``length_buckets=n`` (n > 1) runs a classifier's batch as n forward passes over rows of similar length,
each padded to its own longest row (``rehearsal.methods.length_buckets``): the batch's loss and gradient
for fewer padded tokens.

``bf16_autocast=True`` runs each step's forward pass (and so its backward) under CPU bf16 autocast while
the weights and the optimiser stay fp32. It is entered per step, not around the pass: autocast keeps its
bf16 copies of the weights until its outermost region exits, so one region around ``train()`` would
train every step on the first step's weights. (The Trainer's own ``bf16=True`` is not used: accelerate's
autocast wrapper stays on the model's ``forward`` after the pass.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import (
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from rehearsal.config import CALIBRATIONS, LOSSES
from rehearsal.errors import ConfigError
from rehearsal.methods.calibration import NEEDS_DATA, calibrate, classification_head
from rehearsal.methods.length_buckets import length_bucketed_logits
from rehearsal.replay.collator import REPLAY_CANDIDATE, REPLAY_FLAG, RehearsalCollator, label_key_of
from rehearsal.replay.interference import InterferenceChoice, rank_candidates

__all__ = ["LABELS", "LOSSES", "LossTerm", "RehearsalTrainer", "rehearsal_loss", "token_loss"]

LABELS = "labels"  # the batch key the loss reads its class ids from (the HF convention)

LossTerm = Callable[[torch.nn.Module], torch.Tensor]


def _class_mask(classes: Sequence[int] | None, n_classes: int, device: torch.device) -> torch.Tensor:
    """(n_classes,) bool: True where a class may be predicted; every class when ``classes`` is None."""
    if classes is None:
        return torch.ones(n_classes, dtype=torch.bool, device=device)
    mask = torch.zeros(n_classes, dtype=torch.bool, device=device)
    mask[torch.as_tensor(list(classes), dtype=torch.long, device=device)] = True
    return mask


def rehearsal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    is_replay: torch.Tensor | None,
    *,
    loss: str = "ce",
    current_classes: Sequence[int] | None = None,
    seen_classes: Sequence[int] | None = None,
    mask_unseen: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of ``logits`` (b, C) against ``labels`` (b,) with per-row class masks: the mean, or
    with ``reduction="none"`` one loss per row (b,).

    A masked class gets logit -inf, i.e. it is left out of that row's softmax. Rows with ``is_replay`` (b,)
    equal to 1 are replay. ``current_classes`` is needed by ``loss="asymmetric"``; ``seen_classes``
    (every class trained so far, current included) by ``asymmetric`` and ``mask_unseen``.
    """
    if loss not in LOSSES:
        raise ConfigError(f"'loss' must be one of {list(LOSSES)}, got {loss!r}")
    n_classes = logits.shape[-1]
    replay = torch.zeros_like(labels, dtype=torch.bool) if is_replay is None else is_replay.bool()
    limit_seen = mask_unseen or loss in ("asymmetric", "separated")
    seen = _class_mask(seen_classes if limit_seen else None, n_classes, logits.device)
    if loss in ("asymmetric", "separated"):
        if current_classes is None:
            raise ConfigError(f"the {loss} loss needs the current task's classes (current_classes)")
        new = _class_mask(current_classes, n_classes, logits.device)
    else:
        new = seen
    old = seen & ~new if loss == "separated" else seen
    allowed = torch.where(replay[:, None], old[None, :], new[None, :])
    if loss == "separated":
        allowed[torch.arange(len(labels), device=labels.device), labels] = True
    masked = logits.masked_fill(~allowed, float("-inf"))
    return torch.nn.functional.cross_entropy(masked, labels, reduction=reduction)


def token_loss(logits: torch.Tensor, labels: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """A causal LM's loss: cross-entropy of ``logits`` (b, T, V) at position t against ``labels`` (b, T)
    at t + 1, -100 where no token is scored; the mean over scored tokens, or with ``reduction="none"`` each
    row's mean (b,). Replay rows need no class masks: every row predicts the same vocabulary."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:].to(logits.device)
    per_token = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), labels, ignore_index=-100, reduction="none"
    )
    scored = (labels != -100).float()
    if reduction == "none":
        return (per_token * scored).sum(dim=1) / scored.sum(dim=1).clamp(min=1.0)
    return (per_token * scored).sum() / scored.sum().clamp(min=1.0)


class _CalibrateAtEnd(TrainerCallback):
    def __init__(self, trainer: RehearsalTrainer) -> None:
        self.trainer = trainer

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.trainer._calibrate()


class RehearsalTrainer(Trainer):
    """``Trainer`` whose loss knows replay rows from new rows (see the module docstring)."""

    def __init__(
        self,
        *args: Any,
        loss: str = "ce",
        current_classes: Sequence[int] | None = None,
        seen_classes: Sequence[int] | None = None,
        mask_unseen: bool = False,
        loss_terms: Sequence[LossTerm] = (),
        head_learning_rate: float | None = None,
        calibration: str = "none",
        length_buckets: int = 1,
        bf16_autocast: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(bf16_autocast, bool):
            raise ConfigError(f"'bf16_autocast' must be true or false, got {bf16_autocast!r}")
        if isinstance(length_buckets, bool) or not isinstance(length_buckets, int) or length_buckets < 1:
            raise ConfigError(f"'length_buckets' must be a positive int, got {length_buckets!r}")
        if loss not in LOSSES:
            raise ConfigError(f"'loss' must be one of {list(LOSSES)}, got {loss!r}")
        if calibration not in CALIBRATIONS or calibration in NEEDS_DATA:
            usable = [c for c in CALIBRATIONS if c not in NEEDS_DATA]
            raise ConfigError(
                f"'calibration' must be one of {usable} on the Trainer path, got {calibration!r} "
                "(bias_correction needs a calibration set: use it through rehearsal run)"
            )
        if loss in ("asymmetric", "separated") and current_classes is None:
            raise ConfigError(f"the {loss} loss needs the current task's classes (current_classes)")
        # First among the caller's callbacks: what evaluates at the end of training sees the calibrated head.
        kwargs["callbacks"] = [_CalibrateAtEnd(self), *(kwargs.get("callbacks") or [])]
        super().__init__(*args, **kwargs)
        # compute_loss returns a per-batch mean (it never uses num_items_in_batch): the Trainer must scale it
        # for gradient accumulation itself, whatever the model's forward accepts.
        self.loss_is_scaled_for_ga = False
        if isinstance(self.data_collator, RehearsalCollator):
            self.data_collator.attach_interference_hook()
        self.last_interference: InterferenceChoice | None = None  # the latest MIR ranking, for inspection
        self.loss_name = loss
        self.current_classes = None if current_classes is None else list(current_classes)
        self.seen_classes = None if seen_classes is None else list(seen_classes)
        self.mask_unseen = mask_unseen
        self.loss_terms = list(loss_terms)
        self.head_learning_rate = head_learning_rate
        self.calibration = calibration
        self.length_buckets = length_buckets
        self.bf16_autocast = bf16_autocast
        self.calibration_logs: dict[str, float] = {}  # what the last calibration did (its scale)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """The Trainer's training; the class sets are read from the data first when needed and not given,
        and the head is calibrated when it ends (see the module docstring)."""
        if self.mask_unseen or self.calibration != "none":
            self._fill_class_sets()
        return super().train(*args, **kwargs)

    def _calibrate(self) -> None:
        """Called when training ends, before the caller's callbacks evaluate the model."""
        if self.calibration == "none" or self.current_classes is None or self.seen_classes is None:
            return
        old = sorted(set(self.seen_classes) - set(self.current_classes))
        model = self.accelerator.unwrap_model(self.model)
        self.calibration_logs = calibrate(
            model, self.calibration, old_classes=old, new_classes=self.current_classes
        )

    def _fill_class_sets(self) -> None:
        if self.current_classes is None:
            columns = getattr(self.train_dataset, "column_names", None) or []
            key = label_key_of(columns, LABELS)
            if key is None:
                raise ConfigError(
                    "mask_unseen and calibration need the classes being trained: pass current_classes= "
                    f"and seen_classes=, or train on a dataset with a label column (columns: {columns})"
                )
            assert self.train_dataset is not None  # INVARIANT: it has columns, so it exists
            self.current_classes = sorted({int(c) for c in self.train_dataset[key]})
        if self.seen_classes is None:
            collator = self.data_collator
            old = collator.memory_classes() if isinstance(collator, RehearsalCollator) else set()
            self.seen_classes = sorted(set(self.current_classes) | old)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Replay statistics join the logs here, before any reporting callback (TensorBoard, W&B) reads
        them: ``RehearsalCallback.on_log`` runs after those, so with a plain Trainer the statistics reach
        ``state.log_history`` only."""
        collator = self.data_collator
        if isinstance(collator, RehearsalCollator) and self.is_world_process_zero():
            stats = collator.pop_stats()
            if stats.has_news():
                logs = {**logs, **stats.as_logs()}
        super().log(logs, start_time)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> Any:
        """The Trainer's optimizer (``args.optim``: fused AdamW by default) with the head on
        ``head_learning_rate``; the Trainer's own param groups when it is None.

        The optimizer class and its arguments are the Trainer's choice in both cases: on a CPU the fused
        AdamW step costs about a fifth of the per-parameter loop's (24 against 123 ms a step for MiniLM,
        benchmarks/RESULTS.md, issue 30), a third of a training step before it was used here."""
        if self.head_learning_rate is None or self.optimizer is not None:
            return super().create_optimizer(model)

        target = self.model if model is None else model
        if target is None:
            raise ConfigError("a head learning rate needs the Trainer's model")
        head = {id(p) for p in classification_head(target).parameters()}
        params = [p for p in target.parameters() if p.requires_grad]
        decay = self.args.weight_decay
        groups = [
            {
                "params": [p for p in params if id(p) not in head],
                "lr": self.args.learning_rate,
                "weight_decay": decay,
            },
            {
                "params": [p for p in params if id(p) in head],
                "lr": self.head_learning_rate,
                "weight_decay": decay,
            },
        ]
        # The model matters only to optimizers that read its layers (GaLore, LOMO): a PreTrainedModel.
        pretrained = target if isinstance(target, PreTrainedModel) else None
        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, pretrained)
        self.optimizer = optimizer_cls(groups, **kwargs)
        return self.optimizer

    def autocast_smart_context_manager(
        self, cache_enabled: bool | None = True
    ) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast around one step's loss when ``bf16_autocast`` is on (the Trainer enters this per
        step, in ``compute_loss_context_manager``); the Trainer's own choice otherwise."""
        if not self.bf16_autocast:
            return super().autocast_smart_context_manager(cache_enabled)
        return torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=cache_enabled)

    def training_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """The Trainer's step; a batch holding MIR candidates first keeps only the top-ranked ones."""
        flags = inputs.get(REPLAY_FLAG)
        if isinstance(flags, torch.Tensor) and bool((flags == REPLAY_CANDIDATE).any()):
            inputs = self._keep_interfered(model, self._prepare_inputs(inputs))
        return super().training_step(model, inputs, num_items_in_batch)

    def _keep_interfered(self, model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
        collator = self.data_collator
        if not isinstance(collator, RehearsalCollator):
            raise ConfigError(
                f"MIR candidates need the RehearsalCollator that drew them, got {type(collator).__name__}"
            )
        # The bare model: a DDP wrapper's gradient hooks must see only the real step's backward (each rank
        # ranks its own pool on its own, identical, replica).
        choice = rank_candidates(
            self.accelerator.unwrap_model(model),
            inputs,
            config=collator.config,
            new_loss=lambda logits, labels: self._loss(logits, labels, None),
            row_loss=lambda logits, labels: self._loss(
                logits, labels, torch.ones_like(labels), reduction="none"
            ),
            step_sizes=self._virtual_step_sizes,
        )
        self.last_interference = choice
        stats = collator.stats
        stats.replayed += len(choice.kept)
        stats.replayed_tokens += choice.kept_tokens
        stats.scoring_seconds += choice.scoring_seconds
        stats.virtual_step_seconds += choice.virtual_step_seconds
        # The kept candidates' tasks and similarities, from the pool the collator drew for this batch.
        pool = collator.candidate_pools.popleft() if collator.candidate_pools else []
        for position in choice.kept:
            if position >= len(pool):
                break
            task, score = pool[position]
            if task is not None:
                stats.tasks.add(task)
            if score == score:  # not NaN (a random draw has no similarity)
                stats.similarity_sum += score
                stats.similarity_count += 1
        return choice.inputs

    def _virtual_step_sizes(self, params: Sequence[torch.Tensor]) -> list[float]:
        """Each parameter's group learning rate before any schedule (``initial_lr``): MIR ranks by the
        direction of the step, and a warm-up or decayed rate near 0 would make every score ~0."""
        rates: dict[int, float] = {}
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    rates[id(p)] = float(group.get("initial_lr", group["lr"]))
        return [rates.get(id(p), float(self.args.learning_rate)) for p in params]

    def _loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        is_replay: torch.Tensor | None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        if logits.dim() == 3:
            return token_loss(logits, labels, reduction=reduction)
        return rehearsal_loss(
            logits,
            labels,
            is_replay,
            loss=self.loss_name,
            current_classes=self.current_classes,
            seen_classes=self.seen_classes,
            mask_unseen=self.mask_unseen,
            reduction=reduction,
        )

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        inputs = dict(inputs)
        is_replay = inputs.pop(REPLAY_FLAG, None)
        labels = inputs.pop(LABELS)
        # Class labels (one per row) only: a causal LM's token logits keep the batch's padded width.
        bucketed = (
            length_bucketed_logits(model, inputs, self.length_buckets)
            if labels.dim() == 1 and not return_outputs
            else None
        )
        if bucketed is not None:
            return self._with_loss_terms(model, self._loss(bucketed, labels, is_replay))
        outputs = model(**inputs)
        loss = self._with_loss_terms(model, self._loss(outputs.logits, labels, is_replay))
        return (loss, outputs) if return_outputs else loss

    def _with_loss_terms(self, model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
        for term in self.loss_terms:
            loss = loss + term(model)
        return loss
