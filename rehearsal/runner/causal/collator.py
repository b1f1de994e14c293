"""``CompletionCollator``: the base collator of a causal-LM run. It pads rows of ``input_ids`` and scores
only the answer: every token up to and including the prompt's ``Answer:`` mark gets label -100, as do the
padding positions, and an end-of-text token closes each row so the model learns where an answer stops.

It works on token ids alone, so replayed rows (which the RehearsalCollator tokenizes from the memory's
texts) are labelled exactly like new ones. A row without the mark (a text that is not an instruction) is
scored on every token after the first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rehearsal.errors import ConfigError
from rehearsal.runner.instructions import ANSWER_MARK

__all__ = ["CompletionCollator", "answer_start", "mark_ids"]

IGNORE = -100


def mark_ids(tokenizer: Any) -> list[int]:
    """The token ids of the answer mark as the tokenizer writes it inside a text (no special tokens)."""
    ids = list(tokenizer(ANSWER_MARK, add_special_tokens=False)["input_ids"])
    if not ids:
        raise ConfigError(f"the tokenizer writes the answer mark {ANSWER_MARK!r} as no tokens")
    return ids


def answer_start(ids: Sequence[int], mark: Sequence[int]) -> int | None:
    """The position right after the last occurrence of ``mark`` in ``ids`` (None: no mark)."""
    n = len(mark)
    for start in range(len(ids) - n, -1, -1):
        if list(ids[start : start + n]) == list(mark):
            return start + n
    return None


class CompletionCollator:
    """Pads and labels causal-LM rows (see the module docstring); ``max_length`` bounds a row (eos too)."""

    def __init__(self, tokenizer: Any, *, max_length: int) -> None:
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ConfigError("a causal-LM run needs a tokenizer with an end-of-text and a padding token")
        self.eos = int(tokenizer.eos_token_id)
        self.pad = int(tokenizer.pad_token_id)
        self.mark = mark_ids(tokenizer)
        self.max_length = max_length

    def row(self, ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """(input ids, labels) of one row: eos appended (within ``max_length``), the prompt masked."""
        tokens = [int(t) for t in ids]
        if not tokens or tokens[-1] != self.eos:
            tokens = [*tokens[: self.max_length - 1], self.eos]
        start = answer_start(tokens, self.mark)
        first = 1 if start is None else start
        labels = [IGNORE] * first + tokens[first:]
        return tokens, labels

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        rows = [self.row(f["input_ids"]) for f in features]
        width = max(len(tokens) for tokens, _ in rows)
        input_ids = [tokens + [self.pad] * (width - len(tokens)) for tokens, _ in rows]
        labels = [lab + [IGNORE] * (width - len(lab)) for _, lab in rows]
        mask = [[1] * len(tokens) + [0] * (width - len(tokens)) for tokens, _ in rows]
        batch: dict[str, Any] = {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }
        if features and "is_replay" in features[0]:
            batch["is_replay"] = torch.tensor([int(f["is_replay"]) for f in features], dtype=torch.long)
        return batch
