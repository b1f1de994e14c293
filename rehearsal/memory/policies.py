"""Admission into a memory of fixed capacity, and eviction from it.

A policy sees small records (:class:`EntryInfo`) for the batch being offered and for the current residents,
and returns an :class:`AdmissionDecision`: which incoming positions to add, which resident ids to remove. The
memory applies it (index and vault together); the policy never touches storage.

``decide`` also advances the policy's view of the stream (e.g. the reservoir's count of items seen), so call
it exactly once per offered batch and persist :meth:`AdmissionPolicy.state_dict` with the memory's commit.

INVARIANT: for a bounded policy, ``len(residents) - len(evict) + len(admit) <= capacity`` after every
decision; a memory that starts over capacity (its capacity was lowered) is shrunk by the same rule the policy
uses to evict. ``KeepAll`` never evicts, so it only promises not to *add* past its capacity.

Every policy sorts residents by id before drawing, so a decision depends on the seed and the records, not on
the order in which the memory lists its residents.
"""

from __future__ import annotations

import inspect
import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any, ClassVar

import numpy as np

from rehearsal.errors import ConfigError, ValidationError

__all__ = [
    "SAFETY_TAG",
    "AdmissionDecision",
    "AdmissionPolicy",
    "ClassBalanced",
    "EntryInfo",
    "KeepAll",
    "Priority",
    "Reservoir",
    "make_policy",
]

SAFETY_TAG = "safety"


@dataclass(frozen=True)
class EntryInfo:
    """What a policy may know about an example.

    ``id`` is the memory id for a resident, and the position in the offered batch for an incoming item.
    """

    id: int
    label: str | None = None
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AdmissionDecision:
    admit: list[int]  # positions in the incoming batch to add, sorted
    evict: list[int]  # ids of residents to remove, sorted; always a subset of the residents


# A member of the working set while a batch is decided: (is_incoming, position or resident id).
_Slot = tuple[bool, int]


def _label_key(label: str | None) -> tuple[bool, str]:
    # None (unlabelled) is a class of its own; this key gives labels a total, seed-stable order.
    return (label is not None, label or "")


def _pop_random(items: list[_Slot], rng: np.random.Generator) -> _Slot:
    """Remove and return a uniformly random element in O(1) (swap with the last, then pop)."""
    i = int(rng.integers(len(items)))
    items[i], items[-1] = items[-1], items[i]
    return items.pop()


def _check_batch(incoming: Sequence[EntryInfo], residents: Sequence[EntryInfo]) -> list[EntryInfo]:
    """Validate the call's records and return the residents sorted by id."""
    for pos, item in enumerate(incoming):
        if item.id != pos:
            raise ValidationError(f"incoming[{pos}].id must be its position {pos}, got {item.id}")
    ordered = sorted(residents, key=lambda e: e.id)
    for before, after in itertools.pairwise(ordered):
        if before.id == after.id:
            raise ValidationError(f"resident id {after.id} appears more than once")
    return ordered


def _decision(kept: list[_Slot], residents: Sequence[EntryInfo]) -> AdmissionDecision:
    kept_ids = {value for incoming, value in kept if not incoming}
    return AdmissionDecision(
        admit=sorted(value for incoming, value in kept if incoming),
        evict=[r.id for r in residents if r.id not in kept_ids],
    )


def _check_capacity(capacity: object) -> int:
    # bool is an Integral, but `capacity=True` is a mistake, not a capacity of 1.
    if isinstance(capacity, bool) or not isinstance(capacity, Integral) or int(capacity) < 1:
        raise ConfigError(f"'capacity' must be an integer >= 1, got {capacity!r}")
    return int(capacity)


class AdmissionPolicy(ABC):
    """Decides which offered examples enter a memory and which residents make room for them."""

    name: ClassVar[str]
    capacity: int | None

    def __init__(self, capacity: int) -> None:
        self._limit = _check_capacity(capacity)
        self.capacity = self._limit

    @abstractmethod
    def decide(
        self, incoming: Sequence[EntryInfo], residents: Sequence[EntryInfo], *, rng: np.random.Generator
    ) -> AdmissionDecision:
        """Choose what to admit from ``incoming`` and what to evict from ``residents``.

        Raises ValidationError if ``incoming[i].id != i`` or a resident id repeats.
        """

    def state_dict(self) -> dict[str, Any]:
        """The stream state to persist with the memory (JSON-able); configuration is not included."""
        return {"policy": self.name}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`; raises ValidationError if it belongs to another policy."""
        if state.get("policy") != self.name:
            raise ValidationError(f"state is for policy {state.get('policy')!r}, not {self.name!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(capacity={self.capacity})"


def _state_count(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"state field {field!r} must be an integer >= 0, got {value!r}")
    return value


class KeepAll(AdmissionPolicy):
    """Admit everything and never evict.

    ``capacity=None`` means unbounded. With a capacity, items are admitted first come until the memory is
    full and refused after that ("keep the first N"), since this policy never evicts.
    """

    name = "keep_all"

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = None if capacity is None else _check_capacity(capacity)

    def decide(
        self, incoming: Sequence[EntryInfo], residents: Sequence[EntryInfo], *, rng: np.random.Generator
    ) -> AdmissionDecision:
        _check_batch(incoming, residents)
        room = len(incoming) if self.capacity is None else max(0, self.capacity - len(residents))
        return AdmissionDecision(admit=list(range(min(room, len(incoming)))), evict=[])


class Reservoir(AdmissionPolicy):
    """Vitter's Algorithm R over every item ever offered, across batches and runs.

    Item ``t`` (1-based, counted over the whole stream) is kept with probability ``capacity / t`` once the
    memory is full, replacing a uniformly random member, which may be an item admitted earlier in the same
    batch (that item is then simply not admitted). The memory thus holds a uniform sample of the stream,
    whatever the batch sizes. If the memory has room (e.g. after deletions), items are admitted until full.
    """

    name = "reservoir"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._seen = 0

    def decide(
        self, incoming: Sequence[EntryInfo], residents: Sequence[EntryInfo], *, rng: np.random.Generator
    ) -> AdmissionDecision:
        ordered = _check_batch(incoming, residents)
        # A fresh policy over an existing memory counts the residents as the first items of the stream.
        seen = max(self._seen, len(ordered))
        slots: list[_Slot] = [(False, r.id) for r in ordered]
        while len(slots) > self._limit:
            _pop_random(slots, rng)  # a uniform subsample of a uniform sample is uniform
        n = len(incoming)
        # One draw j_t ~ U[0, t) per item; keeping the item iff j_t < capacity is Algorithm R, and given that,
        # j_t is a uniformly random slot to replace.
        draws = rng.integers(0, np.arange(seen + 1, seen + n + 1)) if n else np.empty(0, dtype=np.int64)
        for pos in range(n):
            if len(slots) < self._limit:
                slots.append((True, pos))
            elif draws[pos] < self._limit:
                slots[int(draws[pos])] = (True, pos)
        self._seen = seen + n
        return _decision(slots, ordered)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seen": self._seen}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._seen = _state_count("seen", state.get("seen"))


class ClassBalanced(AdmissionPolicy):
    """Class-balancing reservoir sampling (CBRS, Chrysakis & Moens, ICML 2020).

    While the memory has room every item is admitted. Once full, a class is *full* if it is, or has been,
    among the largest classes. An item of a class that is not full evicts a random member of a largest class
    (random among tied classes); an item of a full class ``c`` is kept with probability ``m_c / n_c``
    (``m_c`` kept, ``n_c`` seen) and replaces a random member of ``c``.

    Consequences: full classes stay within one of each other, classes with fewer items than their fair share
    keep all of theirs, and each class's kept items are a uniform sample of that class's stream. "Full" must
    be sticky: a class that once sampled at ``m_c / n_c`` and then admitted unconditionally again would
    over-represent its newest items. Unlabelled items (``label=None``) form one class.
    """

    name = "class_balanced"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._seen: dict[str | None, int] = {}
        self._full: set[str | None] = set()

    def decide(
        self, incoming: Sequence[EntryInfo], residents: Sequence[EntryInfo], *, rng: np.random.Generator
    ) -> AdmissionDecision:
        ordered = _check_batch(incoming, residents)
        members: dict[str | None, list[_Slot]] = {}
        for r in ordered:
            members.setdefault(r.label, []).append((False, r.id))
        seen = dict(self._seen)
        for label, slots in members.items():
            seen[label] = max(seen.get(label, 0), len(slots))
        full = set(self._full)
        size = len(ordered)

        def largest() -> list[str | None]:
            top = max(len(slots) for slots in members.values())
            return sorted((c for c, slots in members.items() if len(slots) == top), key=_label_key)

        def evict_from_largest() -> None:
            classes = largest()
            _pop_random(members[classes[int(rng.integers(len(classes)))]], rng)

        while size > self._limit:
            evict_from_largest()
            size -= 1
        for pos, item in enumerate(incoming):
            label = item.label
            seen[label] = seen.get(label, 0) + 1
            if size < self._limit:
                members.setdefault(label, []).append((True, pos))
                size += 1
                continue
            full.update(largest())
            if label in full:
                own = members.setdefault(label, [])
                j = int(rng.integers(seen[label]))
                if j < len(own):
                    own[j] = (True, pos)
            else:
                evict_from_largest()
                members.setdefault(label, []).append((True, pos))
        self._seen, self._full = seen, full
        return _decision([slot for slots in members.values() for slot in slots], ordered)

    def state_dict(self) -> dict[str, Any]:
        # Labels may be None, so the per-class counts are pairs rather than a JSON object.
        return {
            **super().state_dict(),
            "seen": [[label, self._seen[label]] for label in sorted(self._seen, key=_label_key)],
            "full": sorted(self._full, key=_label_key),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        pairs, full = state.get("seen"), state.get("full")
        if not isinstance(pairs, list) or not all(
            isinstance(p, list | tuple) and len(p) == 2 and (p[0] is None or isinstance(p[0], str))
            for p in pairs
        ):
            raise ValidationError(f"state field 'seen' must be a list of [label, count] pairs, got {pairs!r}")
        if not isinstance(full, list) or not all(c is None or isinstance(c, str) for c in full):
            raise ValidationError(f"state field 'full' must be a list of labels, got {full!r}")
        self._seen = {label: _state_count(f"seen[{label!r}]", n) for label, n in pairs}
        self._full = set(full)


class Priority(AdmissionPolicy):
    """Keep the most important examples: safety incidents first, then heavier (rarer) classes.

    Each example has a priority ``(is safety, class weight)``, compared in that order, so a safety-tagged item
    outranks every ordinary one whatever the weights. When the memory is full, an incoming item whose priority
    is at least the lowest resident priority evicts a uniformly random resident of that lowest priority;
    a lower-priority item is not admitted. Hence safety items are evicted only after every ordinary item is
    gone; a memory full of safety items refuses ordinary items, and a new safety item replaces a random safety
    item of the lowest weight. Ties admit the newcomer (recent data wins among equals), so with equal weights
    this is random replacement: deterministic tiers were chosen over weighted-random eviction so the safety
    and weight guarantees hold exactly, not just on average. No state is kept across batches.

    ``class_weights`` maps labels (strings, as the memory stores them) to finite weights > 0; other labels,
    and unlabelled items, get ``default_weight``.
    """

    name = "priority"

    def __init__(
        self,
        capacity: int,
        *,
        class_weights: Mapping[str, float] | None = None,
        default_weight: float = 1.0,
    ) -> None:
        super().__init__(capacity)
        self.default_weight = self._check_weight("default_weight", default_weight)
        weights = {} if class_weights is None else class_weights
        if not isinstance(weights, Mapping):
            raise ConfigError(f"'class_weights' must be a mapping of label -> weight, got {weights!r}")
        for label in weights:
            if not isinstance(label, str):
                raise ConfigError(f"'class_weights' keys must be string labels, got {label!r}")
        self.class_weights = {k: self._check_weight(f"class_weights[{k!r}]", v) for k, v in weights.items()}

    @staticmethod
    def _check_weight(field: str, value: object) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ConfigError(f"'{field}' must be a finite number > 0, got {value!r}")
        return float(value)

    def rank(self, entry: EntryInfo) -> tuple[bool, float]:
        """The priority ``(is safety, weight)`` of an entry; higher is kept longer."""
        weight = self.default_weight if entry.label is None else self.class_weights.get(entry.label)
        return (SAFETY_TAG in entry.tags, self.default_weight if weight is None else weight)

    def decide(
        self, incoming: Sequence[EntryInfo], residents: Sequence[EntryInfo], *, rng: np.random.Generator
    ) -> AdmissionDecision:
        ordered = _check_batch(incoming, residents)
        tiers: dict[tuple[bool, float], list[_Slot]] = {}
        for r in ordered:
            tiers.setdefault(self.rank(r), []).append((False, r.id))
        size = len(ordered)

        def evict_lowest() -> None:
            low = min(tiers)
            _pop_random(tiers[low], rng)
            if not tiers[low]:
                del tiers[low]  # keeps min(tiers) meaning "lowest priority present"

        while size > self._limit:
            evict_lowest()
            size -= 1
        for pos, item in enumerate(incoming):
            rank = self.rank(item)
            if size < self._limit:
                size += 1
            elif rank >= min(tiers):
                evict_lowest()
            else:
                continue
            tiers.setdefault(rank, []).append((True, pos))
        return _decision([slot for slots in tiers.values() for slot in slots], ordered)

    def __repr__(self) -> str:
        return f"Priority(capacity={self.capacity}, class_weights={self.class_weights})"


_POLICIES: dict[str, type[AdmissionPolicy]] = {
    cls.name: cls for cls in (KeepAll, Reservoir, ClassBalanced, Priority)
}
_ALIASES = {"all": "keep_all"}  # the name KeepAll had before it matched the run config's


def make_policy(name: str, capacity: int | None, **options: Any) -> AdmissionPolicy:
    """Build a policy by name: ``"keep_all"`` (also ``"all"``), ``"reservoir"``, ``"class_balanced"`` or
    ``"priority"``.

    Raises ConfigError for an unknown name, an option the policy does not take, or an invalid value.
    """
    cls = _POLICIES.get(_ALIASES.get(name, name))
    if cls is None:
        raise ConfigError(f"unknown admission policy {name!r}; known: {', '.join(sorted(_POLICIES))}")
    try:
        inspect.signature(cls).bind(capacity, **options)
    except TypeError as exc:
        raise ConfigError(f"bad options for policy {name!r}: {exc}") from None
    return cls(capacity, **options)  # type: ignore[arg-type]  # capacity None is rejected by bounded policies
