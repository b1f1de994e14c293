"""Training one candidate: the new examples, topped up with replay from the memory, through the Trainer.

The memory holds the past only (the update's own examples enter it once the candidate is trained), so
replay never draws the batch's own rows. ``ewc`` adds the online EWC penalty anchored at the current
version (its Fisher state travels with the version's weights) and consolidates on the new data after.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.arithmetic import wants_bf16
from rehearsal.deployment.config import DeploymentConfig
from rehearsal.deployment.model import DeployedModel
from rehearsal.deployment.priority import PriorityCollator, priority_ids
from rehearsal.memory.facade import RehearsalMemory

__all__ = ["train_candidate"]


def _dataset(
    candidate: DeployedModel, texts: Sequence[str], labels: Sequence[str], vectors: np.ndarray
) -> Any:
    from rehearsal.training.dataset import training_set, vector_rows

    config = candidate.config
    columns: dict[str, list[Any]] = {
        config.replay.text_column: list(texts),
        config.replay.vector_column: vector_rows(vectors),
    }
    label_ids = candidate.state.label_ids(list(labels))
    return training_set(candidate.tokenizer, texts, label_ids, max_length=config.max_length, columns=columns)


def train_candidate(
    candidate: DeployedModel,
    texts: Sequence[str],
    labels: Sequence[str],
    vectors: np.ndarray,
    *,
    memory: RehearsalMemory,
    adapter: str | None,
    replay_where: Mapping[str, Any] | None,
    ewc_state: Path | None,
    ewc_out: Path | None,
) -> dict[str, float]:
    """Train ``candidate`` in place on the new examples (``vectors``: their (n, dim) memory vectors) with
    replay from ``memory`` entries matching ``replay_where`` (None: no replay). ``adapter`` names the
    adapter to train (None: the whole model). Returns the training's numbers: examples, replay rows
    drawn and how many were priority entries, and the counts of priority and eligible entries."""
    from transformers import DataCollatorWithPadding, set_seed

    config: DeploymentConfig = candidate.config
    set_seed(config.seed)
    model = candidate.trainable(adapter)
    train = _dataset(candidate, texts, labels, vectors)
    base = DataCollatorWithPadding(candidate.tokenizer)
    replay_on = replay_where is not None and len(memory.ids(replay_where)) > 0
    collator: Any = base
    if replay_on and replay_where is not None:
        collator = _replay_collator(candidate, memory, base, replay_where)
    else:
        # Without replay the collator never reads them, and the model's forward must not see them.
        train = train.remove_columns([config.replay.text_column, config.replay.vector_column])
    # The penalty applies once the current version has a Fisher state; a first one starts it.
    anchored = ewc_state is not None and ewc_state.is_file()
    ewc = _ewc(config, ewc_state if anchored else None) if ewc_out is not None else None
    _fit(candidate, model, train, collator, terms=[ewc] if ewc is not None and anchored else [])
    counts = collator.counts() if replay_on else {}
    if ewc is not None and ewc_out is not None:
        _consolidate(ewc, candidate, train, base, ewc_out)
    model.eval()
    return {
        "examples": float(len(texts)),
        "replayed": float(counts.get("replayed", 0)),
        "priority_replayed": float(counts.get("priority_replayed", 0)),
        "priority_entries": float(counts.get("priority_entries", 0)),
        "eligible_entries": float(len(memory.ids(replay_where)) if replay_on else 0),
    }


def _replay_collator(
    candidate: DeployedModel, memory: RehearsalMemory, base: Any, replay_where: Mapping[str, Any]
) -> PriorityCollator:
    """The collator that tops each batch up with replay of the eligible entries, priority ones first."""
    from rehearsal.replay.trainer import LABELS

    config: DeploymentConfig = candidate.config
    replay = dataclasses.replace(
        config.replay, mark_replay=True, max_length=config.max_length, label_column=LABELS, seed=config.seed
    )
    label2id = {label: i for i, label in enumerate(candidate.state.labels)}
    priority = (
        priority_ids(memory, replay_where, tags=config.safety_tags, rare_share=config.rare_label_share)
        if config.priority_share > 0
        else []
    )
    return PriorityCollator(
        memory,
        base,
        candidate.tokenizer,
        replay,
        eligible=replay_where,
        label2id=label2id,
        priority=priority,
        share=config.priority_share,
    )


def _ewc(config: DeploymentConfig, state: Path | None) -> Any:
    """The EWC state to train under: the current version's, or a fresh one."""
    from rehearsal.methods.ewc import EWC

    return EWC.load(state) if state is not None else EWC(config.ewc)


def _fit(candidate: DeployedModel, model: Any, train: Any, collator: Any, *, terms: list[Any]) -> None:
    """One quiet Trainer pass over ``train``: CE over the labels the deployment knows, ``terms`` added."""
    from rehearsal.training.trainer import TrainSettings
    from rehearsal.training.trainer import train as train_model

    config: DeploymentConfig = candidate.config
    settings = TrainSettings(
        batch_size=config.batch_size,
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        seed=config.seed,
        loss="ce",
        mask_unseen=True,
        bf16=wants_bf16(config.bf16_training),
    )
    seen = candidate.state.label_ids(list(candidate.state.labels))
    with tempfile.TemporaryDirectory(prefix="rehearsal-update-") as scratch:
        train_model(
            model,
            settings,
            output_dir=scratch,
            dataset=train,
            collator=collator,
            seen_classes=seen,
            loss_terms=terms,
        )


def _consolidate(ewc: Any, candidate: DeployedModel, train: Any, collate: Any, out: Path) -> None:
    """Fold the new data's Fisher into the EWC state and anchor it at the candidate."""
    from rehearsal.training.fisher import consolidate

    consolidate(ewc, candidate.model, train, collate)
    out.parent.mkdir(parents=True, exist_ok=True)
    ewc.save(out)
