"""Self-rehearsal for a causal-LM run: old skills are replayed with the model's *own* answers.

Before a phase trains, the model as the previous phase left it answers (greedily) the prompt of every
memory entry of an earlier skill; replay then mixes ``prompt + its own answer`` into the batches instead of
the stored reference answer. The model is asked to keep doing what it did, not to learn the old answers
again: the causal-LM form of self-synthesised rehearsal (SSR, ACL 2024), where only the instructions of
old tasks need to be kept. The memory is chosen from as for random replay; the entries' stored answers are
read only to find where their prompts end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rehearsal.memory.facade import RehearsalMemory
from rehearsal.replay.collator import RehearsalCollator
from rehearsal.runner.causal.evaluate import MAX_NEW_TOKENS, greedy_answers
from rehearsal.runner.instructions import ANSWER_MARK, instruction_text

__all__ = ["SelfRehearsalCollator", "own_answers", "prompt_of"]


def prompt_of(text: str) -> str:
    """The prompt of an instruction text (everything before its last answer mark; the whole text when it
    has none, e.g. a plain text ingested beside the skills)."""
    head, mark, _ = text.rpartition(ANSWER_MARK)
    return head if mark else text


def own_answers(
    model: Any,
    tokenizer: Any,
    memory: RehearsalMemory,
    *,
    old_tasks: Sequence[str],
    batch_size: int,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> dict[int, str]:
    """Entry id -> ``prompt + the model's greedy answer`` for every memory entry of ``old_tasks``."""
    if not old_tasks:
        return {}
    groups = memory.group_ids("task", where={"task": {"$in": list(old_tasks)}})
    ids = sorted(int(i) for members in groups.values() for i in members)
    texts = memory.texts_by_id(ids)
    kept = [i for i in ids if i in texts]
    prompts = [prompt_of(texts[i]) for i in kept]
    answers = greedy_answers(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens)
    return {i: instruction_text(p, a) for i, p, a in zip(kept, prompts, answers, strict=True)}


class SelfRehearsalCollator(RehearsalCollator):
    """A RehearsalCollator whose replayed rows carry the model's own answers (:func:`own_answers`).

    An entry without a written answer (admitted after the answers were written) is replayed with its
    stored text, as random replay would."""

    def __init__(self, *args: Any, answers: Mapping[int, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers = dict(answers)

    def replay_texts(self, memory: RehearsalMemory, ids: Sequence[int]) -> dict[int, str]:
        stored = memory.texts_by_id(ids)
        return {i: self.answers.get(i, text) for i, text in stored.items()}
