"""A meta-learned start: first-order Reptile over small tasks drawn from the memory (Nichol et al. 2018).

Between updates, the model is moved towards weights from which a few steps on a new task go far::

    repeat iterations:
        task  = ways classes of the memory, shots examples each          (seeded by ``rng``)
        theta' = theta after inner_steps AdamW steps on the task          (loss over the task's classes)
        theta  = theta + meta_step * (theta' - theta)                     (the first-order outer update)

With ``meta_step = 1`` this is plain fine-tuning on the same sampled tasks with the same steps, which is
the control a measurement compares against (``benchmarks/meta_start.py``). :func:`fine_tune` is the
few-shot adaptation both starts then get: a few epochs on a new task's examples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rehearsal.config import ConfigMixin
from rehearsal.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from rehearsal.memory.facade import RehearsalMemory

__all__ = ["ReptileConfig", "fine_tune", "memory_examples", "reptile", "sample_task"]


@dataclasses.dataclass
class ReptileConfig(ConfigMixin):
    """How long and how far Reptile moves the start (see the module docstring)."""

    iterations: int = 20
    ways: int = 3  # classes per sampled task
    shots: int = 4  # examples per class of a sampled task (the inner batch is ways * shots)
    inner_steps: int = 4
    inner_learning_rate: float = 3e-4
    head_learning_rate: float = 3e-3
    meta_step: float = 0.5

    def __post_init__(self) -> None:
        for name in ("iterations", "ways", "shots", "inner_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"'{name}' must be an int >= 1, got {value!r}")
        for name in ("inner_learning_rate", "head_learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ConfigError(f"'{name}' must be a positive number, got {value!r}")
        step = self.meta_step
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0.0 <= step <= 1.0:
            raise ConfigError(f"'meta_step' must be in [0, 1], got {step!r}")


def sample_task(
    labels: Sequence[int], *, ways: int, shots: int, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """(positions into ``labels``, the task's classes): ``ways`` classes with at least ``shots`` examples,
    ``shots`` positions of each, drawn without replacement."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    eligible = sorted(c for c, members in by_class.items() if len(members) >= shots)
    if len(eligible) < ways:
        raise ValidationError(
            f"a {ways}-way task needs {ways} classes with {shots} examples; {len(eligible)} have"
        )
    classes = sorted(int(c) for c in rng.choice(eligible, size=ways, replace=False))
    picks = [int(i) for c in classes for i in rng.choice(by_class[c], size=shots, replace=False)]
    return picks, classes


def memory_examples(
    memory: RehearsalMemory, *, per_class: int, rng: np.random.Generator
) -> tuple[list[str], list[int]]:
    """(texts, int labels): up to ``per_class`` entries of each int label the memory holds."""
    ids: list[int] = []
    for label, members in sorted(memory.group_ids("label").items(), key=lambda kv: str(kv[0])):
        if isinstance(label, int):
            ids.extend(int(i) for i in rng.choice(members, size=min(per_class, len(members)), replace=False))
    entries = memory.entries(ids)
    return memory.get_texts(ids), [int(entries[i].label) for i in ids]  # type: ignore[arg-type]


def _optimizer(model: Any, learning_rate: float, head_learning_rate: float) -> Any:
    import torch

    from rehearsal.methods.calibration import classification_head

    head = {id(p) for p in classification_head(model).parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) not in head], "lr": learning_rate},
        {"params": [p for p in params if id(p) in head], "lr": head_learning_rate},
    ]
    # fused: one pass over all parameters (on a CPU a fifth of the per-parameter loop's time; issue 30)
    return torch.optim.AdamW(groups, lr=learning_rate, weight_decay=0.0, fused=True)


def _step(model: Any, optimizer: Any, batch: Mapping[str, Any], labels: Any, classes: Sequence[int]) -> float:
    """One step of cross-entropy over ``classes`` only (the other logits are left out of the softmax)."""
    import torch

    model.train()
    logits = model(**batch).logits
    mask = torch.full((logits.shape[-1],), float("-inf"))
    mask[list(classes)] = 0.0
    loss = torch.nn.functional.cross_entropy(logits + mask, labels)
    loss.backward()  # type: ignore[no-untyped-call]
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def reptile(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    config: ReptileConfig,
    *,
    rng: np.random.Generator,
    max_length: int = 64,
) -> dict[str, float]:
    """Move ``model`` (in place) by first-order Reptile over tasks sampled from (``texts``, ``labels``);
    returns the mean inner loss of the first and the last inner step."""
    import torch

    torch.manual_seed(int(rng.integers(2**31)))  # dropout in the inner steps, from the caller's seed
    params = [p for p in model.parameters() if p.requires_grad]
    first, last = [], []
    for _ in range(config.iterations):
        start = [p.detach().clone() for p in params]
        picks, classes = sample_task(labels, ways=config.ways, shots=config.shots, rng=rng)
        batch = tokenizer(
            [texts[i] for i in picks],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        target = torch.as_tensor([int(labels[i]) for i in picks])
        optimizer = _optimizer(model, config.inner_learning_rate, config.head_learning_rate)
        losses = [_step(model, optimizer, batch, target, classes) for _ in range(config.inner_steps)]
        first.append(losses[0])
        last.append(losses[-1])
        with torch.no_grad():
            for p, s in zip(params, start, strict=True):
                p.copy_(s + config.meta_step * (p - s))
    return {"first_inner_loss": float(np.mean(first)), "last_inner_loss": float(np.mean(last))}


def fine_tune(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    classes: Sequence[int],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    head_learning_rate: float,
    rng: np.random.Generator,
    max_length: int = 64,
) -> int:
    """Few-shot adaptation: ``epochs`` shuffled passes over (``texts``, ``labels``), the loss over
    ``classes``; returns the optimizer steps taken."""
    import torch

    torch.manual_seed(int(rng.integers(2**31)))
    optimizer = _optimizer(model, learning_rate, head_learning_rate)
    steps = 0
    for _ in range(epochs):
        order = rng.permutation(len(texts))
        for start in range(0, len(order), batch_size):
            rows = [int(i) for i in order[start : start + batch_size]]
            batch = tokenizer(
                [texts[i] for i in rows],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            _step(model, optimizer, batch, torch.as_tensor([int(labels[i]) for i in rows]), classes)
            steps += 1
    return steps
