"""The bundled multi-skill instruction stream (WordNet 3.0): skills as tasks for continual instruction tuning.

Six skills, one task each, in this order (see ``rehearsal/data/README.md``)::

    define    Define the noun 'fluoride'.               -> a salt of hydrofluoric acid
    synonym   Give a synonym of 'espy'.                 -> descry   (spot, spy also accepted)
    antonym   Give the antonym of 'narrow'.             -> wide
    hypernym  'moose' is a kind of what?                -> deer
    pos       What part of speech is 'hatpin'?          -> noun
    json      Return JSON with keys "word" and ...: x   -> {"word": "x", "category": "animal"}

A training text is the prompt, a newline, ``Answer:`` and the answer (:func:`instruction_text`); the loss of a
causal LM is taken on the answer only (``rehearsal.runner.causal.collator``). Each skill's test items ask
about words that no training item of any skill mentions. The file's ``general`` lines (WordNet's usage
sentences, in no task) are the held-out text whose perplexity tracks general language retention.

``load_instruction_stream`` returns an ordinary :class:`TaskStream` (one class per task: the skill), so
replay, admission and metrics run unchanged; :func:`instruction_of` gives a test text's prompt and answers.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from rehearsal.errors import NotFoundError, ValidationError
from rehearsal.runner.tasks import TaskStream, load_bundled_stream

__all__ = [
    "ANSWER_MARK",
    "INSTRUCTION_FILE",
    "INSTRUCTION_TASKS",
    "Instruction",
    "general_texts",
    "instruction_of",
    "instruction_text",
    "load_instruction_stream",
]

INSTRUCTION_TASKS: tuple[str, ...] = ("define", "synonym", "antonym", "hypernym", "pos", "json")
INSTRUCTION_FILE = "instruction_stream.jsonl.gz"
# What separates a prompt from its answer; a generation prompt ends with it.
ANSWER_MARK = "\nAnswer:"


@dataclass(frozen=True)
class Instruction:
    """One item of a skill: the word asked about, the prompt, the reference answer and every answer
    accepted as right (a word's other synonyms, a hypernym's other lemmas)."""

    task: str
    word: str
    prompt: str
    answer: str
    accept: tuple[str, ...]

    @property
    def text(self) -> str:
        return instruction_text(self.prompt, self.answer)


def instruction_text(prompt: str, answer: str) -> str:
    """The training text of a prompt and its answer: ``prompt + "\\nAnswer: " + answer``."""
    return f"{prompt}{ANSWER_MARK} {answer}"


def load_instruction_stream(
    *,
    max_train_per_class: int | None = None,
    max_test_per_class: int | None = None,
    tasks: Sequence[str] | None = None,
    seed: int = 0,
) -> TaskStream:
    """The bundled skills as a task stream: each example's text is its :func:`instruction_text`, its label
    the skill. The caps subsample each skill as ``load_wordnet_stream`` does (nested, seeded)."""
    return load_bundled_stream(
        INSTRUCTION_FILE,
        INSTRUCTION_TASKS,
        tasks=tasks,
        caps=(max_train_per_class, max_test_per_class),
        seed=seed,
        salt=lambda task, split, label: f"instructions:{split}:{task}",
    )


@functools.cache
def _records() -> tuple[dict[str, object], ...]:
    source = resources.files("rehearsal").joinpath("data", INSTRUCTION_FILE)
    with source.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        return tuple(json.loads(line) for line in lines)


@functools.cache
def _by_text() -> dict[str, Instruction]:
    out: dict[str, Instruction] = {}
    for rec in _records():
        if rec["split"] == "general":
            continue
        accept = rec["accept"]
        if not isinstance(accept, list) or not accept:
            raise ValidationError(f"instruction {rec['prompt']!r} has no accepted answers")
        item = Instruction(
            str(rec["task"]),
            str(rec["word"]),
            str(rec["prompt"]),
            str(rec["answer"]),
            tuple(map(str, accept)),
        )
        if item.text != rec["text"]:
            raise ValidationError(f"instruction {item.prompt!r}: its text is not prompt + answer")
        out[item.text] = item
    return out


def instruction_of(text: str) -> Instruction:
    """The bundled item whose training text is ``text``."""
    found = _by_text().get(text)
    if found is None:
        raise NotFoundError(f"no bundled instruction has the text {text[:60]!r}")
    return found


def general_texts() -> tuple[str, ...]:
    """The held-out general sentences (in no task), in file order."""
    return tuple(str(rec["text"]) for rec in _records() if rec["split"] == "general")
