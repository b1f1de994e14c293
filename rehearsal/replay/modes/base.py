"""What every replay mode shares, and the registry of modes (``MODES``, filled by ``register_mode``).

A mode is a class with a ``name`` from ``rehearsal.config.REPLAY_MODES`` and a ``select`` method; one
instance serves one ``ReplaySelector`` and keeps that selector's state for the mode (cached groups of
eligible ids, the coverage schedule). The pieces the modes share live here, so each is written once:

- ``search``: the batch's vectors against the eligible entries, ``k`` hits per vector;
- ``own_copies``: the hits that are the batch's own examples stored earlier, never replayed;
- ``fill_random``: the class-balanced (or uniform) random draw that tops any mode's choice up;
- ``finish``: the metadata fetch for the random picks, and the ``ReplayChoice`` returned.

``rehearsal.config.REPLAY_MODES`` stays the list of names because configs may not import this folder
(tests/test_layering.py): ``register_mode`` refuses a class whose name is not on it, and a test holds
the registry to every name on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rehearsal.config import REPLAY_MODES, ReplayConfig
from rehearsal.errors import ConfigError
from rehearsal.replay.choice import ReplayChoice
from rehearsal.store.types import Hit

if TYPE_CHECKING:
    from rehearsal.memory.facade import RehearsalMemory

__all__ = [
    "MODES",
    "SELF_MATCH",
    "EligibleGroups",
    "Picks",
    "ReplayMode",
    "mode_class",
    "register_mode",
    "selectable_mode",
]

# A stored vector this close to a batch vector is the batch's own example stored earlier.
SELF_MATCH = 0.9999


@dataclass
class Picks:
    """The replay chosen so far for one batch, in the order chosen.

    ``scores``: id -> similarity to the batch (NaN for a random pick); ``metadata``: what the search
    returned with each hit (random picks are fetched at the end); ``own``: the batch's own stored copies,
    which are never picked.
    """

    own: set[int] = field(default_factory=set)
    scores: dict[int, float] = field(default_factory=dict)
    metadata: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    def free(self, entry_id: int) -> bool:
        """Whether ``entry_id`` may still be picked: not picked yet, and not one of the batch's own."""
        return entry_id not in self.scores and entry_id not in self.own

    def take(self, hit: Hit) -> None:
        self.scores[hit.id] = hit.score
        self.metadata[hit.id] = hit.metadata

    def take_random(self, entry_id: int) -> None:
        self.scores[entry_id] = float("nan")


class EligibleGroups:
    """The eligible ids grouped by a metadata field (or all in one group), cached per memory generation:
    the random fill and the coverage floor read them every batch; they change only with the memory."""

    def __init__(self, memory: RehearsalMemory, eligible: Mapping[str, Any] | None) -> None:
        self.memory = memory
        self.eligible = eligible
        self._cache: dict[str | None, dict[Any, np.ndarray]] = {}
        self._generation = -1

    def by(self, field_name: str | None) -> dict[Any, np.ndarray]:
        """Eligible ids by ``field_name`` (None: one group of every eligible id); empty groups left out."""
        if self.memory.read_only:
            self.memory.refresh()  # a reader sees what the writer committed since
        if self._generation != self.memory.generation:
            self._cache, self._generation = {}, self.memory.generation
        if field_name not in self._cache:
            if field_name is None:
                raw = {None: self.memory.ids(self.eligible)}
            else:
                raw = self.memory.group_ids(field_name, where=self.eligible)
            self._cache[field_name] = {k: np.asarray(v, dtype=np.int64) for k, v in raw.items() if v}
        return self._cache[field_name]


class ReplayMode:
    """One way of choosing replay ids for a batch; subclasses set ``name`` and implement ``select``."""

    name: ClassVar[str]
    # Why a selector cannot choose this mode's replay from the memory, and what does instead (None: it can).
    refusal: ClassVar[str | None] = None

    def __init__(
        self, memory: RehearsalMemory, config: ReplayConfig, *, eligible: Mapping[str, Any] | None
    ) -> None:
        self.memory = memory
        self.config = config
        self.eligible = eligible
        self.groups = EligibleGroups(memory, eligible)

    def select(self, vectors: np.ndarray, count: int, *, rng: np.random.Generator) -> ReplayChoice:
        """``count`` replay ids (``count`` > 0) for a batch whose examples have ``vectors`` (b, dim)."""
        raise NotImplementedError

    # -- shared pieces -----------------------------------------------------------------------------
    def search(self, vectors: np.ndarray, where: Mapping[str, Any] | None) -> list[list[Hit]]:
        """The ``k`` nearest entries matching ``where`` for each row of ``vectors`` (b, dim)."""
        return self.memory.search_vectors(
            vectors, self.config.k, where=where, threads=self.config.search_threads
        )

    @staticmethod
    def own_copies(hits: list[list[Hit]]) -> set[int]:
        """The hits that match a searched row exactly: that row's own stored copy, never replayed.
        (Copies of the current task's rows are kept out by the eligible filter in the first place.)"""
        return {hit.id for row in hits for hit in row if hit.score >= SELF_MATCH}

    def fill_random(self, want: int, picks: Picks, rng: np.random.Generator) -> None:
        """Add up to ``want`` random eligible ids that ``picks`` leaves free; with ``balance="class"`` the
        draws cycle through the labels in a seeded order, so every label gets its share before any gets a
        second one. The count is met whenever enough entries are eligible."""
        if want <= 0:
            return
        groups = self.groups.by("label" if self.config.balance == "class" else None)
        pools = [groups[key] for key in groups]
        if not pools:
            return
        order = [pools[i] for i in rng.permutation(len(pools))] if self.config.balance == "class" else pools
        # Each pool is drawn without replacement, so a draw never collides with an earlier one. At most
        # len(picks) + len(own) of a pool's draws can already be taken, so that many more than ``want``
        # always suffice.
        taken = len(picks) + len(picks.own)
        draws = [iter(rng.choice(pool, size=min(len(pool), want + taken), replace=False)) for pool in order]
        added = 0
        while added < want and draws:
            live = []
            for draw in draws:  # one new entry per pool per round: every label gets its share first
                if added >= want:
                    break
                entry_id = next((int(i) for i in draw if picks.free(int(i))), None)
                if entry_id is None:
                    continue  # this pool is exhausted
                picks.take_random(entry_id)
                added += 1
                live.append(draw)
            draws = live if added < want else []

    def finish(self, picks: Picks) -> ReplayChoice:
        """``picks`` as a ``ReplayChoice``, with the metadata of the random picks fetched in one call (an
        id the memory no longer holds is dropped)."""
        missing = [i for i in picks.scores if i not in picks.metadata]
        if missing:
            for entry_id, row in self.memory.entries(missing).items():
                picks.metadata[entry_id] = row.metadata()
        ids = [i for i in picks.scores if i in picks.metadata]
        return ReplayChoice(ids, [picks.scores[i] for i in ids], {i: picks.metadata[i] for i in ids})


# The registry: mode name -> class. It is filled as rehearsal.replay.modes imports the mode modules.
MODES: dict[str, type[ReplayMode]] = {}


def register_mode(cls: type[ReplayMode]) -> type[ReplayMode]:
    """Class decorator: make ``cls`` the mode named ``cls.name`` (one of ``REPLAY_MODES``)."""
    if cls.name not in REPLAY_MODES or cls.name in MODES:
        raise ConfigError(f"replay mode {cls.name!r} is registered twice or not among {list(REPLAY_MODES)}")
    MODES[cls.name] = cls
    return cls


def mode_class(name: str) -> type[ReplayMode]:
    """The class of replay mode ``name``; ConfigError for a name no class is registered under."""
    if name not in MODES:
        raise ConfigError(f"unknown replay mode {name!r}; known: {sorted(MODES)}")
    return MODES[name]


def selectable_mode(name: str) -> type[ReplayMode]:
    """The class of replay mode ``name`` if a selector chooses its replay from the memory; ConfigError,
    saying what replays in that mode instead, if not."""
    cls = mode_class(name)
    if cls.refusal is not None:
        raise ConfigError(cls.refusal)
    return cls
