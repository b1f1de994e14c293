"""Maximally interfered retrieval (Aljundi et al., NeurIPS 2019): rank replay candidates by how much one
SGD step on the new examples would raise their loss, and keep the top ones.

The collator draws the candidate pool (``rehearsal.selection``) and flags its rows ``REPLAY_CANDIDATE``;
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
from rehearsal.hf import REPLAY_CANDIDATE as _CANDIDATE
from rehearsal.hf import REPLAY_FLAG as _FLAG

__all__ = ["InterferenceChoice", "interference_scores", "rank_candidates"]

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
    step_sizes: Callable[[Sequence[torch.nn.Parameter]], list[float]],
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


def rank_candidates(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    *,
    config: ReplayConfig,
    new_loss: LossFn,
    row_loss: LossFn,
    step_sizes: Callable[[Sequence[torch.nn.Parameter]], list[float]],
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
