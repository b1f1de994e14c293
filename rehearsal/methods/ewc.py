"""Elastic Weight Consolidation (Kirkpatrick et al. 2017), online form (Schwarz et al. 2018).

After a task, :meth:`EWC.consolidate` estimates the diagonal Fisher information of the trainable
parameters and remembers their values ``theta*``; while later tasks train, :meth:`EWC.penalty` adds

    (lam / 2) · sum_i F_i · (theta_i − theta*_i)^2

to the loss, so parameters that mattered to old tasks move less. Online EWC keeps one running Fisher,
``F <- gamma · F_old + F_new``, and one anchor, ``theta* <- theta after the latest task`` (``gamma=1``
accumulates every task's Fisher with equal weight).

How the Fisher is estimated (the choices that matter):

- per example: ``F_i = mean over examples of (d log p(y | x) / d theta_i)^2`` — batches are split into
  single examples, each with its own forward and backward (a backward per example through a whole
  batch's graph would cost the batch size times more). It is *not* the square of the batch-mean
  gradient, which is near zero at a minimum whatever the curvature and underestimates F by up to a
  factor of the batch size.
- ``fisher="sampled"`` (the default, the "true" Fisher): ``y`` is drawn from the model's own predictive
  distribution (one draw per example, or per token for a causal LM, from a seeded ``torch.Generator``).
  ``fisher="empirical"`` uses the dataset's labels instead: cheaper to reason about, but it is the
  outer product of the training-loss gradient, which vanishes on examples the model already fits.
- in eval mode (no dropout), over parameters with ``requires_grad`` only: under PEFT that is the LoRA
  weights of the active adapter, and frozen weights cannot move, so they need no penalty.

The Trainer hook: :class:`rehearsal.replay.trainer.RehearsalTrainer` sums ``loss_terms`` (callables
``model -> scalar tensor``) into its loss; an :class:`EWC` is one (``__call__`` is :meth:`penalty`)::

    ewc = EWC(EWCConfig(lam=100.0))
    for task in tasks:
        RehearsalTrainer(model, ..., loss_terms=[ewc]).train()
        ewc.consolidate(model, DataLoader(task_train, batch_size=8, collate_fn=base_collator))
        ewc.save(out / "ewc.pt")
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from rehearsal._files import atomic_writer
from rehearsal.config import FISHER_MODES, EWCConfig
from rehearsal.errors import StoreFormatError, ValidationError

__all__ = ["EWC", "FISHER_MODES", "EWCConfig", "LogLikelihood", "log_likelihood"]

_FORMAT = "rehearsal-ewc/1"
_DROPPED_INPUTS = ("is_replay",)  # a collator's bookkeeping column that no model accepts

LogLikelihood = Callable[[torch.nn.Module, Mapping[str, Any], str, "torch.Generator | None"], torch.Tensor]
"""``(model, batch, fisher_mode, generator) -> (b,)`` log-likelihood of each example of the batch."""


def log_likelihood(
    model: torch.nn.Module, batch: Mapping[str, Any], fisher: str, generator: torch.Generator | None
) -> torch.Tensor:
    """Per-example log-likelihood (b,) for a classifier (logits (b, C), labels (b,)) or a causal LM
    (logits (b, T, V), labels (b, T) with -100 where no token is scored; summed over the example's tokens).

    With ``fisher="sampled"`` the labels are drawn from the model's softmax and only the label mask is
    read from ``batch``.
    """
    inputs = {k: v for k, v in batch.items() if k not in _DROPPED_INPUTS and k != "labels"}
    if "labels" not in batch:
        raise ValidationError(f"a Fisher batch needs 'labels'; it has {sorted(batch)}")
    labels = torch.as_tensor(batch["labels"])
    logits = model(**inputs).logits
    labels = labels.to(logits.device)
    if logits.dim() == 3:
        # Causal LM: position t predicts token t + 1, as in the models' own loss.
        logits, labels = logits[:, :-1, :], labels[:, 1:]
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    scored = labels != -100
    if fisher == "sampled":
        with torch.no_grad():
            flat = log_probs.detach().exp().reshape(-1, log_probs.shape[-1])
            draws = torch.multinomial(flat.cpu(), 1, generator=generator).reshape(labels.shape)
        labels = draws.to(log_probs.device)
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    picked = picked * scored
    return picked if picked.dim() == 1 else picked.sum(dim=-1)


def _single_examples(batches: Iterable[Mapping[str, Any]]) -> Iterable[dict[str, Any]]:
    """Each example of each batch as a batch of one (tensors and lists sliced along the first axis)."""
    for batch in batches:
        sizes = {len(v) for v in batch.values() if isinstance(v, torch.Tensor | list | tuple)}
        if len(sizes) != 1:
            raise ValidationError(f"a Fisher batch needs columns of one length, got lengths {sorted(sizes)}")
        for i in range(sizes.pop()):
            yield {
                k: v[i : i + 1] if isinstance(v, torch.Tensor | list | tuple) else v for k, v in batch.items()
            }


class EWC:
    """Online EWC state (running diagonal Fisher and anchor) and its penalty; see the module docstring."""

    def __init__(self, config: EWCConfig | None = None, *, loglik: LogLikelihood = log_likelihood) -> None:
        self.config = config or EWCConfig()
        self.loglik = loglik
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.consolidations = 0
        self._on_device: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return f"EWC({self.config!r}, parameters={len(self.fisher)}, consolidations={self.consolidations})"

    # -- estimating -----------------------------------------------------------------------------
    def estimate_fisher(
        self, model: torch.nn.Module, batches: Iterable[Mapping[str, Any]]
    ) -> dict[str, torch.Tensor]:
        """Diagonal Fisher of ``model``'s trainable parameters: per-example squared gradients of the
        log-likelihood, averaged over examples (at most ``config.max_examples``). Float32, on CPU."""
        params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        if not params:
            raise ValidationError("the model has no trainable parameters (requires_grad) to consolidate")
        sums = {name: torch.zeros(p.shape, dtype=torch.float32) for name, p in params.items()}
        generator = torch.Generator().manual_seed(self.config.seed + self.consolidations)
        cap = self.config.max_examples
        seen = 0
        was_training = model.training
        model.eval()  # dropout would add noise that is not curvature
        try:
            names, tensors = list(params), list(params.values())
            for example in _single_examples(batches):
                if cap is not None and seen >= cap:
                    break
                (ll,) = self.loglik(model, example, self.config.fisher, generator)
                grads = torch.autograd.grad(ll, tensors, allow_unused=True)
                for name, grad in zip(names, grads, strict=True):
                    if grad is not None:
                        sums[name] += grad.detach().float().cpu() ** 2
                seen += 1
        finally:
            model.train(was_training)
        if seen == 0:
            raise ValidationError("no examples to estimate the Fisher from (empty batches)")
        return {name: total / seen for name, total in sums.items()}

    def consolidate(self, model: torch.nn.Module, batches: Iterable[Mapping[str, Any]]) -> None:
        """End of a task: ``F <- gamma · F + F_new`` and ``theta* <- the current trainable parameters``.

        A parameter first seen now (e.g. a new task's LoRA adapter) starts from ``F_new``; one absent now
        (a frozen or removed adapter) keeps its decayed Fisher and its anchor.
        """
        new = self.estimate_fisher(model, batches)
        gamma = float(self.config.gamma)
        merged = {name: f * gamma for name, f in self.fisher.items()}
        for name, f in new.items():
            old = merged.get(name)
            if old is not None and old.shape != f.shape:
                raise ValidationError(
                    f"parameter {name!r} changed shape: {tuple(old.shape)} -> {tuple(f.shape)}"
                )
            merged[name] = f if old is None else old + f
        anchor = dict(self.anchor)
        for name, p in model.named_parameters():
            if name in new:
                anchor[name] = p.detach().float().cpu().clone()
        self.fisher, self.anchor = merged, anchor
        self.consolidations += 1
        self._on_device.clear()

    # -- the loss term --------------------------------------------------------------------------
    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        """``(lam / 2) · sum_i F_i (theta_i − theta*_i)^2`` over ``model``'s trainable parameters that have a
        Fisher; a scalar tensor (0 before the first consolidation). A consolidated parameter missing from
        ``model``, or of another shape, raises :class:`ValidationError`."""
        params = dict(model.named_parameters())
        missing = sorted(set(self.fisher) - set(params))
        if missing:
            raise ValidationError(
                f"EWC state names {len(missing)} parameter(s) the model lacks, e.g. {missing[0]!r}"
            )
        total: torch.Tensor | None = None
        for name, fisher in self.fisher.items():
            p = params[name]
            if not p.requires_grad:
                continue  # a frozen parameter cannot move: its term is constant and has no gradient
            if p.shape != fisher.shape:
                raise ValidationError(
                    f"parameter {name!r} has shape {tuple(p.shape)}, EWC state has {tuple(fisher.shape)}"
                )
            f, star = self._device_copy(name, p.device)
            term = (f * (p.float() - star) ** 2).sum()
            total = term if total is None else total + term
        if total is None:
            device = next(iter(params.values())).device if params else torch.device("cpu")
            return torch.zeros((), device=device)
        return 0.5 * float(self.config.lam) * total

    __call__ = penalty  # the LossTerm protocol of RehearsalTrainer: model -> scalar tensor

    def _device_copy(self, name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Fisher and anchor live on CPU; each training step would otherwise copy them to the device again.
        key = (name, device)
        if key not in self._on_device:
            self._on_device[key] = (self.fisher[name].to(device), self.anchor[name].to(device))
        return self._on_device[key]

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write config, Fisher and anchor (tensors keyed by parameter name) with ``torch.save``, atomically
        (a crash mid-write leaves the previous state, not a torn file)."""
        state = {
            "format": _FORMAT,
            "config": self.config.to_dict(),
            "consolidations": self.consolidations,
            "fisher": self.fisher,
            "anchor": self.anchor,
        }
        with atomic_writer(Path(path)) as f:
            torch.save(state, f)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        model: torch.nn.Module | None = None,
        loglik: LogLikelihood = log_likelihood,
    ) -> EWC:
        """Read a state written by :meth:`save`; with ``model``, check every saved parameter exists in it
        with the same shape (:class:`ValidationError` otherwise).

        A file that is not EWC state raises :class:`StoreFormatError`."""
        try:
            state: Any = torch.load(Path(path), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
            raise StoreFormatError(f"cannot read EWC state from {str(path)!r}: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise StoreFormatError(f"{str(path)!r} is not an EWC state file (format {_FORMAT!r})")
        if set(state["fisher"]) != set(state["anchor"]):
            raise StoreFormatError(f"{str(path)!r}: Fisher and anchor name different parameters")
        ewc = cls(EWCConfig.from_dict(state["config"]), loglik=loglik)
        ewc.fisher, ewc.anchor = dict(state["fisher"]), dict(state["anchor"])
        ewc.consolidations = int(state["consolidations"])
        if model is not None:
            ewc.check(model)
        return ewc

    def check(self, model: torch.nn.Module) -> None:
        """Raise :class:`ValidationError` unless each consolidated parameter is in ``model``, same shape."""
        params = dict(model.named_parameters())
        for name, fisher in self.fisher.items():
            if name not in params:
                raise ValidationError(f"EWC state has parameter {name!r}, which the model lacks")
            if params[name].shape != fisher.shape:
                raise ValidationError(
                    f"parameter {name!r} has shape {tuple(params[name].shape)}, "
                    f"EWC state has {tuple(fisher.shape)}"
                )
