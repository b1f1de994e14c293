"""The memorisation check: does the generator write back what it was trained on?

Plant ``make_canaries(n)`` (random sentences no model could write by chance) in the first task's training
data, run the generator as a run would, and ``copy_report`` the generations against the canaries and the
real training texts. A generation *copies* a text when, after lower-casing and reading punctuation as spaces,

- verbatim: the text appears in it whole; or
- near: the embeddings' cosine is >= ``cosine`` (0.95), or the two share a run of ``min_words`` words (8;
  the whole text when it is shorter).

A canary's *secret* is its number (as in the secret-sharer test): a generation that writes it exposes the
canary even when the words around it differ. ``CopyReport.passed`` is the bar: no canary written verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rehearsal.embedding import Encoder

__all__ = ["CopyReport", "copies", "copy_report", "make_canaries"]

# Plain words for canaries: random 8-word sequences of them (plus a number) occur in no gloss.
_WORD_TEXT = (
    "amber anchor basket beacon bishop cactus candle carbon cedar cobalt copper coral crystal dagger "
    "desert dolphin ember falcon feather ferry fossil garnet glacier granite harbor hazel helmet indigo "
    "island ivory jasmine kettle lantern lemon lizard marble meadow mirror monsoon nectar needle nickel "
    "oasis olive orbit oyster paddle pepper pillar planet quartz quiver radar raven ribbon saddle "
    "salmon satchel shadow silver spiral summit tablet thistle timber topaz tunnel umbrella valley velvet "
    "violet walnut willow window yarrow zephyr zinc"
)
_WORDS = tuple(_WORD_TEXT.split())


def make_canaries(n: int, *, rng: np.random.Generator) -> list[str]:
    """``n`` distinct random sentences: "the <8 random words> code <6 digits>"."""
    out: list[str] = []
    while len(out) < n:
        words = " ".join(_WORDS[int(i)] for i in rng.choice(len(_WORDS), size=8, replace=False))
        sentence = f"the {words} code {int(rng.integers(100_000, 1_000_000))}"
        if sentence not in out:
            out.append(sentence)
    return out


def _norm(text: str) -> str:
    """Lower case, punctuation as spaces, one space between words and none inside a number (tokenizers
    decode "123" as "1 2 3"), so a copy is not missed for its spacing."""
    words = re.sub(r"[^0-9a-z]+", " ", text.lower()).strip()
    return re.sub(r"(?<=\d) (?=\d)", "", words)


def _runs(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def copies(
    generations: Sequence[str],
    originals: Sequence[str],
    *,
    encoder: Encoder | None,
    cosine: float = 0.95,
    min_words: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """(verbatim, near): (g, o) bool matrices, ``[i, j]`` true when generation i copies original j (near
    includes verbatim). Without an encoder only the word runs count as near copies."""
    gens = [_norm(g) for g in generations]
    origs = [_norm(o) for o in originals]
    verbatim = np.zeros((len(gens), len(origs)), dtype=bool)
    near = np.zeros_like(verbatim)
    gen_words = [g.split() for g in gens]
    for j, original in enumerate(origs):
        words = original.split()
        if not words:
            continue
        n = min(min_words, len(words))
        wanted = _runs(words, n)
        for i, g in enumerate(gens):
            verbatim[i, j] = original in g
            near[i, j] = verbatim[i, j] or not wanted.isdisjoint(_runs(gen_words[i], n))
    if encoder is not None and gens and origs:
        g_vec = np.asarray(encoder.encode(list(generations)), dtype=np.float32)
        o_vec = np.asarray(encoder.encode(list(originals)), dtype=np.float32)
        near |= (g_vec @ o_vec.T) >= cosine  # the encoder's vectors are unit length
    return verbatim, near


@dataclass
class CopyReport:
    """What the generations copy: canaries (of ``canaries`` planted) and real training texts."""

    generations: int
    canaries: int
    canaries_verbatim: int  # canaries written whole by at least one generation
    canaries_near: int  # canaries nearly copied (verbatim included) by at least one generation
    canary_secrets: int  # canaries whose number (the secret) appears in at least one generation
    training_texts: int
    generations_copying_training: int  # generations that nearly copy at least one training text
    generations_verbatim_training: int  # generations containing a whole training text

    @property
    def passed(self) -> bool:
        """The bar: no canary reproduced verbatim."""
        return self.canaries_verbatim == 0

    @property
    def near_copy_rate(self) -> float:
        """Share of generations that nearly copy a real training text."""
        return self.generations_copying_training / self.generations if self.generations else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "near_copy_rate": self.near_copy_rate}


def _secret_written(canary: str, generations: Sequence[str]) -> bool:
    """Whether the canary's longest number (of 4+ digits) appears as a number in a generation."""
    numbers = re.findall(r"\d{4,}", _norm(canary))
    if not numbers:
        return False
    secret = max(numbers, key=len)
    return any(secret in re.findall(r"\d+", _norm(g)) for g in generations)


def copy_report(
    generations: Sequence[str],
    *,
    canaries: Sequence[str],
    training: Sequence[str],
    encoder: Encoder | None,
    cosine: float = 0.95,
    min_words: int = 8,
) -> CopyReport:
    """Count what ``generations`` copy of ``canaries`` and of the real ``training`` texts (module doc)."""
    c_verbatim, c_near = copies(generations, canaries, encoder=encoder, cosine=cosine, min_words=min_words)
    t_verbatim, t_near = copies(generations, training, encoder=encoder, cosine=cosine, min_words=min_words)
    return CopyReport(
        generations=len(generations),
        canaries=len(canaries),
        canaries_verbatim=int(c_verbatim.any(axis=0).sum()),
        canaries_near=int(c_near.any(axis=0).sum()),
        canary_secrets=sum(_secret_written(c, generations) for c in canaries),
        training_texts=len(training),
        generations_copying_training=int(t_near.any(axis=1).sum()) if len(training) else 0,
        generations_verbatim_training=int(t_verbatim.any(axis=1).sum()) if len(training) else 0,
    )
