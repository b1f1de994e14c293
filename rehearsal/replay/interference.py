"""Maximally interfered retrieval (Aljundi et al., NeurIPS 2019): rank replay candidates by how much one
SGD step on the new examples would raise their loss, and keep the top ones.

The collator draws the candidate pool (``rehearsal.replay.modes.mir``), flags its rows ``REPLAY_CANDIDATE``;
``RehearsalTrainer.training_step`` calls :func:`rank_candidates` with the model before the real step.
The virtual step touches only the trainable parameters (a head, LoRA weights, or everything), leaves no
``.grad`` behind and puts every parameter back bit for bit, so the real step is the one the Trainer would
have taken on the kept rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rehearsal.config import ReplayConfig
from rehearsal.errors import ConfigError
from rehearsal.replay.collator import REPLAY_CANDIDATE as _CANDIDATE
from rehearsal.replay.collator import REPLAY_FLAG as _FLAG

__all__ = ["InterferenceChoice", "head_interference_scores", "interference_scores", "rank_candidates"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class InterferenceChoice:
    """What :func:`rank_candidates` kept: ``inputs`` (the new rows, then the kept candidates flagged as
    replay), each candidate's ``scores`` (loss after minus loss before the virtual step, in pool order)
    and the pool positions ``kept``, best first."""

    inputs: dict[str, Any]
    scores: torch.Tensor
    kept: list[int]
    kept_tokens: int
    virtual_step_seconds: float
    scoring_seconds: float


def _rows(inputs: dict[str, Any], index: torch.Tensor, batch: int) -> dict[str, Any]:
    return {
        k: v[index] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == batch else v
        for k, v in inputs.items()
    }


def interference_scores(
    model: torch.nn.Module,
    new_inputs: dict[str, Any],
    new_labels: torch.Tensor,
    candidate_inputs: dict[str, Any],
    candidate_labels: torch.Tensor,
    *,
    new_loss: LossFn,
    row_loss: LossFn,
    step_sizes: Callable[[Sequence[torch.Tensor]], list[float]],
) -> tuple[torch.Tensor, float, float]:
    """(scores (n_candidates,), virtual-step seconds, scoring seconds).

    ``new_loss(logits, labels)`` is the scalar loss the virtual step descends; ``row_loss`` gives one loss
    per candidate. The model runs in eval mode throughout: dropout would add noise to the before/after
    difference that has nothing to do with the step, and batch-norm statistics must not move.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("MIR's virtual step needs trainable parameters; the model has none")
    was_training = model.training
    model.eval()
    try:
        started = time.perf_counter()
        with torch.no_grad():
            before = row_loss(model(**candidate_inputs).logits, candidate_labels)
        scored = time.perf_counter()
        loss = new_loss(model(**new_inputs).logits, new_labels)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for param, grad, size in zip(params, grads, step_sizes(params), strict=True):
                if grad is not None:
                    param.add_(grad, alpha=-size)
        stepped = time.perf_counter()
        try:
            with torch.no_grad():
                after = row_loss(model(**candidate_inputs).logits, candidate_labels)
        finally:
            with torch.no_grad():
                for param, copy in zip(params, saved, strict=True):
                    param.copy_(copy)
        done = time.perf_counter()
    finally:
        model.train(was_training)
    return (after - before).detach(), stepped - scored, (scored - started) + (done - stepped)


def head_interference_scores(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    new: torch.Tensor,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    *,
    new_loss: LossFn,
    row_loss: LossFn,
    step_sizes: Callable[[Sequence[torch.Tensor]], list[float]],
) -> tuple[torch.Tensor, float, float]:
    """Like :func:`interference_scores`, with the virtual step on the classification head alone.

    One no-grad forward of the whole batch (``inputs``: model inputs for every row; ``new`` and
    ``candidates``: row indices) gives the head's inputs; the step and both scorings are then a linear
    layer on those features, computed functionally, so no parameter is ever written. In class-incremental
    learning the head is where new tasks interfere most (its rows for new classes grow), and this costs one
    forward pass instead of MIR's extra forward-backward and two forwards over the pool.
    """
    from rehearsal.methods.calibration import classification_head

    head = classification_head(model)
    params = [p for p in (head.weight, head.bias) if p is not None and p.requires_grad]
    if not params:
        raise ConfigError("mir_scope 'head' needs a trainable classification head; the head is frozen")
    captured: list[torch.Tensor] = []

    def keep_input(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        captured.append(args[0].detach())

    was_training = model.training
    model.eval()
    handle = head.register_forward_hook(keep_input)
    try:
        started = time.perf_counter()
        with torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
        model.train(was_training)
    if len(captured) != 1:
        raise ConfigError(
            f"the classification head of {type(model).__name__} was called {len(captured)} times"
        )
    features = captured[0]
    encoded = time.perf_counter()
    weight = head.weight.detach().clone().requires_grad_(head.weight.requires_grad)
    bias = None if head.bias is None else head.bias.detach().clone().requires_grad_(head.bias.requires_grad)
    leaves = [t for t in (weight, bias) if t is not None and t.requires_grad]
    loss = new_loss(torch.nn.functional.linear(features[new], weight, bias), labels[new])
    grads = dict(zip(map(id, leaves), torch.autograd.grad(loss, leaves), strict=True))
    sizes = dict(zip(map(id, leaves), step_sizes(params), strict=True))
    with torch.no_grad():
        moved = [
            t - sizes[id(t)] * grads[id(t)] if id(t) in grads else t for t in (weight, bias) if t is not None
        ]
        stepped_weight, stepped_bias = moved[0], (moved[1] if bias is not None else None)
        stepped = time.perf_counter()
        before = row_loss(torch.nn.functional.linear(features[candidates], weight, bias), labels[candidates])
        after = row_loss(
            torch.nn.functional.linear(features[candidates], stepped_weight, stepped_bias), labels[candidates]
        )
    done = time.perf_counter()
    return (after - before).detach(), stepped - encoded, (encoded - started) + (done - stepped)


def rank_candidates(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    *,
    config: ReplayConfig,
    new_loss: LossFn,
    row_loss: LossFn,
    step_sizes: Callable[[Sequence[torch.Tensor]], list[float]],
) -> InterferenceChoice:
    """Keep the ``config.replay_count(new rows)`` candidates of a collated batch whose loss rises most
    (ties to the earlier pool row), within ``config.max_replay_tokens``; rows that are not candidates
    (new rows, replay chosen otherwise) are kept as they are."""
    flags = inputs[_FLAG]
    labels = inputs["labels"]
    batch = int(flags.shape[0])
    candidates = torch.nonzero(flags == _CANDIDATE).flatten()
    others = torch.nonzero(flags != _CANDIDATE).flatten()
    new = torch.nonzero(flags == 0).flatten()
    model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", _FLAG)}
    if config.mir_scope == "head":
        scores, virtual_seconds, scoring_seconds = head_interference_scores(
            model,
            model_inputs,
            new,
            candidates,
            labels,
            new_loss=new_loss,
            row_loss=row_loss,
            step_sizes=step_sizes,
        )
    else:
        scores, virtual_seconds, scoring_seconds = interference_scores(
            model,
            _rows(model_inputs, new, batch),
            labels[new],
            _rows(model_inputs, candidates, batch),
            labels[candidates],
            new_loss=new_loss,
            row_loss=row_loss,
            step_sizes=step_sizes,
        )
    mask = inputs.get("attention_mask")
    if isinstance(mask, torch.Tensor):
        tokens = [int(t) for t in mask[candidates].sum(dim=1)]
    else:
        ids = inputs.get("input_ids")
        tokens = [int(ids.shape[-1]) if isinstance(ids, torch.Tensor) else 0] * len(candidates)
    count = config.replay_count(len(new))
    kept: list[int] = []
    used = 0
    for position in torch.sort(scores, descending=True, stable=True).indices.tolist():
        if len(kept) >= count:
            break
        if config.max_replay_tokens is not None and used + tokens[position] > config.max_replay_tokens:
            break  # the collator's budget rule: stop at the first row that does not fit
        kept.append(position)
        used += tokens[position]
    keep = torch.cat([others, candidates[torch.as_tensor(kept, dtype=torch.long, device=candidates.device)]])
    out = _rows(inputs, keep, batch)
    out[_FLAG] = torch.where(out[_FLAG] == _CANDIDATE, torch.ones_like(out[_FLAG]), out[_FLAG])
    return InterferenceChoice(out, scores.cpu(), kept, used, virtual_seconds, scoring_seconds)
