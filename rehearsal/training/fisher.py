"""EWC's consolidation after training: the Fisher of the trained model on the examples it just learned,
folded into the online EWC state (``rehearsal.methods.ewc``)."""

from __future__ import annotations

from typing import Any

from rehearsal.methods.ewc import EWC

__all__ = ["FISHER_BATCH", "MODEL_COLUMNS", "consolidate"]

# Columns of a training set that a classifier's forward (and the Fisher's log-likelihood) takes.
MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "labels")
FISHER_BATCH = 16


def consolidate(ewc: EWC, model: Any, dataset: Any, collate: Any, *, shuffle_seed: int | None = None) -> None:
    """Fold ``model``'s Fisher on ``dataset`` (its model columns only, shuffled with ``shuffle_seed``
    unless None) into ``ewc``, anchored at ``model``."""
    from torch.utils.data import DataLoader

    examples = dataset.select_columns([c for c in MODEL_COLUMNS if c in dataset.column_names])
    if shuffle_seed is not None:
        examples = examples.shuffle(seed=shuffle_seed)
    ewc.consolidate(model, DataLoader(examples, batch_size=FISHER_BATCH, collate_fn=collate))
