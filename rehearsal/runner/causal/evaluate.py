"""How well a causal LM does a skill: greedy answers scored against the accepted ones, the loss of the
reference answer, and the perplexity of held-out general text.

- exact match: the answer, normalised (lower case, words only), equals one accepted answer;
- token-F1: the best F1 over the accepted answers of the answer's words (SQuAD's measure), in [0, 1];
- answer loss: mean cross-entropy per answer token of the reference answer behind its prompt;
- perplexity: exp(total NLL / predicted tokens) of plain texts, every token after the first scored.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rehearsal.runner.causal.collator import IGNORE, CompletionCollator
from rehearsal.runner.instructions import ANSWER_MARK, Instruction

__all__ = [
    "MAX_NEW_TOKENS",
    "SkillScores",
    "answer_budget",
    "exact_match",
    "greedy_answers",
    "merge_scores",
    "perplexity",
    "score_skill",
    "text_nll",
    "token_f1",
]

# The longest bundled answers (ten-word definitions, JSON records) take about 20 tokens.
MAX_NEW_TOKENS = 24
# Tokens a skill's answer may run past its longest accepted answer: a one-word skill is not given room to
# ramble for 24 tokens (which costs generation time and cannot turn a wrong answer right).
_SLACK = 4


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def exact_match(answer: str, accept: Sequence[str]) -> bool:
    return any(_words(answer) == _words(a) for a in accept)


def token_f1(answer: str, accept: Sequence[str]) -> float:
    """The best word-level F1 of ``answer`` against any accepted answer."""
    got = Counter(_words(answer))
    best = 0.0
    for reference in accept:
        want = Counter(_words(reference))
        common = sum((got & want).values())
        if common:
            precision, recall = common / sum(got.values()), common / sum(want.values())
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


@dataclass(frozen=True)
class SkillScores:
    """Per test item of a skill: greedy answers, exact match, token-F1; and the mean answer loss."""

    answers: list[str]
    exact: np.ndarray  # (n,) bool
    f1: np.ndarray  # (n,) float in [0, 1]
    answer_loss: float


def _prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    ids = list(tokenizer(prompt + ANSWER_MARK)["input_ids"])
    # Tokenizers that close every text with an end token (BERT's [SEP]) would ask the model to continue
    # after an ending: drop it.
    return ids[:-1] if ids and ids[-1] == tokenizer.eos_token_id else ids


def answer_budget(tokenizer: Any, items: Sequence[Instruction]) -> int:
    """New tokens to generate for ``items``: their longest accepted answer plus a little, at most
    :data:`MAX_NEW_TOKENS`."""
    longest = max(
        (len(tokenizer(" " + a, add_special_tokens=False)["input_ids"]) for i in items for a in i.accept),
        default=0,
    )
    return min(MAX_NEW_TOKENS, longest + 1 + _SLACK)  # + 1: the end token


def greedy_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    batch_size: int,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[str]:
    """The model's greedy continuation of each prompt (left-padded batches), up to the first newline."""
    import torch

    out: list[str] = []
    model.eval()
    pad = int(tokenizer.pad_token_id)
    for start in range(0, len(prompts), batch_size):
        rows = [_prompt_ids(tokenizer, p) for p in prompts[start : start + batch_size]]
        width = max(map(len, rows))
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        with torch.no_grad():
            generated = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=pad,
            )
        for row in generated[:, width:]:
            text = tokenizer.decode(row.tolist(), skip_special_tokens=True)
            out.append(text.strip().split("\n", 1)[0].strip())
    return out


def _nll(model: Any, batch: dict[str, Any]) -> tuple[float, int]:
    """(summed NLL, scored tokens) of a collated batch."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    target = batch["labels"][:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), target, ignore_index=IGNORE, reduction="sum"
    )
    return float(losses), int((target != IGNORE).sum())


def answer_loss(
    model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int, batch_size: int
) -> float:
    """Mean cross-entropy per answer token (eos included) of ``texts`` (prompt + mark + answer)."""
    collator = CompletionCollator(tokenizer, max_length=max_length)
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        encoded = tokenizer(list(chunk), truncation=True, max_length=max_length)
        nll, n = _nll(model, collator([{"input_ids": ids} for ids in encoded["input_ids"]]))
        total, count = total + nll, count + n
    return total / max(count, 1)


def perplexity(
    model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int, batch_size: int
) -> float:
    """Token perplexity of plain ``texts``: every token after the first is scored, and no end token is
    added (a sentence of general text has no answer to close)."""
    total, count = text_nll(model, tokenizer, texts, max_length=max_length, batch_size=batch_size)
    return math.exp(total / max(count, 1))


def text_nll(
    model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int, batch_size: int
) -> tuple[float, int]:
    """(summed NLL, scored tokens) of plain ``texts``, as :func:`perplexity` scores them."""
    import torch

    model.eval()
    pad = int(tokenizer.pad_token_id)
    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(list(texts[start : start + batch_size]), truncation=True, max_length=max_length)
        rows = [list(ids) for ids in encoded["input_ids"]]
        width = max(map(len, rows))
        batch = {
            "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
            "labels": torch.tensor([[IGNORE, *r[1:]] + [IGNORE] * (width - len(r)) for r in rows]),
        }
        nll, n = _nll(model, batch)
        total, count = total + nll, count + n
    return total, count


def merge_scores(parts: Sequence[tuple[Sequence[int], SkillScores]], n: int) -> SkillScores:
    """One skill's scores from parts scored apart (``rows`` of the skill's items each, e.g. per adapter);
    the answer loss is the parts' mean weighted by their items."""
    answers = [""] * n
    exact, f1 = np.zeros(n, dtype=bool), np.zeros(n, dtype=float)
    loss = 0.0
    for rows, part in parts:
        for k, i in enumerate(rows):
            answers[i], exact[i], f1[i] = part.answers[k], part.exact[k], part.f1[k]
        loss += part.answer_loss * len(rows)
    return SkillScores(answers=answers, exact=exact, f1=f1, answer_loss=loss / max(n, 1))


def score_skill(
    model: Any, tokenizer: Any, items: Sequence[Instruction], *, max_length: int, batch_size: int
) -> SkillScores:
    """Every measure of one skill's test ``items``."""
    prompts = [item.prompt for item in items]
    budget = answer_budget(tokenizer, items)
    answers = greedy_answers(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=budget)
    pairs = list(zip(answers, items, strict=True))
    return SkillScores(
        answers=answers,
        exact=np.array([exact_match(a, item.accept) for a, item in pairs], dtype=bool),
        f1=np.array([token_f1(a, item.accept) for a, item in pairs], dtype=float),
        answer_loss=answer_loss(
            model, tokenizer, [item.text for item in items], max_length=max_length, batch_size=batch_size
        ),
    )
