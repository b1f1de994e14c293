"""Tests for admission policies: statistical guarantees, invariants, state, configuration errors."""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from scipy import stats

from rehearsal.errors import ConfigError, ValidationError
from rehearsal.memory.policies import (
    SAFETY_TAG,
    AdmissionDecision,
    AdmissionPolicy,
    ClassBalanced,
    EntryInfo,
    KeepAll,
    Priority,
    Reservoir,
    make_policy,
)

# Strict: a deterministic (seeded) test that fails only for a real bias, never for bad luck at 5%.
ALPHA = 1e-3


class FakeMemory:
    """Applies decisions the way RehearsalMemory does, and checks every decision is well formed."""

    def __init__(self, policy: AdmissionPolicy) -> None:
        self.policy = policy
        self.entries: dict[int, EntryInfo] = {}
        self.origin: dict[int, int] = {}  # memory id -> index of the item in the whole stream
        self._next_id = 100  # ids unrelated to batch positions, so mixing them up shows
        self._offered = 0

    def offer(
        self, batch: Sequence[tuple[str | None, frozenset[str]]], rng: np.random.Generator
    ) -> AdmissionDecision:
        incoming = [EntryInfo(pos, label, tags) for pos, (label, tags) in enumerate(batch)]
        residents = list(self.entries.values())
        decision = self.policy.decide(incoming, residents, rng=rng)
        check_decision(decision, incoming, residents)
        for rid in decision.evict:
            del self.entries[rid]
            del self.origin[rid]
        for pos in decision.admit:
            self.entries[self._next_id] = EntryInfo(self._next_id, batch[pos][0], batch[pos][1])
            self.origin[self._next_id] = self._offered + pos
            self._next_id += 1
        self._offered += len(batch)
        if self.policy.capacity is not None and len(residents) <= self.policy.capacity:
            assert len(self.entries) <= self.policy.capacity
        return decision

    def delete(self, ids: Sequence[int]) -> None:
        for rid in ids:
            del self.entries[rid]
            del self.origin[rid]

    def counts(self) -> Counter[str | None]:
        return Counter(e.label for e in self.entries.values())


def check_decision(
    d: AdmissionDecision, incoming: Sequence[EntryInfo], residents: Sequence[EntryInfo]
) -> None:
    assert d.admit == sorted(set(d.admit))
    assert d.evict == sorted(set(d.evict))
    assert all(0 <= pos < len(incoming) for pos in d.admit)
    assert set(d.evict) <= {r.id for r in residents}


def plain(labels: Sequence[str | None]) -> list[tuple[str | None, frozenset[str]]]:
    return [(label, frozenset()) for label in labels]


def run_stream(
    policy: AdmissionPolicy, n_items: int, batch_size: int, rng: np.random.Generator
) -> FakeMemory:
    mem = FakeMemory(policy)
    for start in range(0, n_items, batch_size):
        mem.offer(plain([None] * min(batch_size, n_items - start)), rng)
    return mem


def inclusion_counts(
    factory: Callable[[], AdmissionPolicy], *, n_items: int, batch_size: int, reps: int, seed: int
) -> np.ndarray:
    """How often each stream position ended up in memory, over independent repetitions."""
    rng = np.random.default_rng(seed)
    counts = np.zeros(n_items, dtype=np.int64)
    for _ in range(reps):
        mem = run_stream(factory(), n_items, batch_size, rng)
        counts[list(mem.origin.values())] += 1
    return counts


def uniformity_pvalue(counts: np.ndarray, buckets: int = 10) -> float:
    # Sampling without replacement makes bucket counts less spread than multinomial: the test is conservative.
    return float(stats.chisquare(counts.reshape(buckets, -1).sum(axis=1)).pvalue)


class AlwaysReplace(AdmissionPolicy):
    """A biased fake: every new item replaces a random member (keeps recent items far too often)."""

    name = "always_replace"

    def decide(
        self, incoming: Sequence[EntryInfo], residents: Sequence[EntryInfo], *, rng: np.random.Generator
    ) -> AdmissionDecision:
        slots = [(False, r.id) for r in sorted(residents, key=lambda e: e.id)]
        for pos in range(len(incoming)):
            if len(slots) < self._limit:
                slots.append((True, pos))
            else:
                slots[int(rng.integers(len(slots)))] = (True, pos)
        kept = {v for inc, v in slots if not inc}
        return AdmissionDecision(
            admit=sorted(v for inc, v in slots if inc), evict=[r.id for r in residents if r.id not in kept]
        )


# --- reservoir ---------------------------------------------------------------------------------------------


def test_reservoir_keeps_a_uniform_sample_of_the_stream() -> None:
    counts = inclusion_counts(lambda: Reservoir(100), n_items=1000, batch_size=50, reps=300, seed=1)
    assert counts.sum() == 100 * 300
    assert uniformity_pvalue(counts) > ALPHA


@pytest.mark.parametrize(
    "biased", [lambda: KeepAll(100), lambda: AlwaysReplace(100)], ids=["keep_first", "recent"]
)
def test_uniformity_check_rejects_biased_policies(biased: Callable[[], AdmissionPolicy]) -> None:
    counts = inclusion_counts(biased, n_items=1000, batch_size=50, reps=300, seed=1)
    assert uniformity_pvalue(counts) < ALPHA


def test_reservoir_batch_and_one_by_one_streams_give_the_same_distribution() -> None:
    one = inclusion_counts(lambda: Reservoir(30), n_items=300, batch_size=1, reps=150, seed=2)
    batched = inclusion_counts(lambda: Reservoir(30), n_items=300, batch_size=70, reps=150, seed=3)
    assert uniformity_pvalue(one) > ALPHA
    assert uniformity_pvalue(batched) > ALPHA
    table = np.stack([one.reshape(10, -1).sum(axis=1), batched.reshape(10, -1).sum(axis=1)])
    assert stats.chi2_contingency(table).pvalue > ALPHA


def test_reservoir_may_displace_an_item_admitted_earlier_in_the_same_batch() -> None:
    # Capacity 1 and a first batch of 50: each later item must be able to replace the earlier one.
    rng = np.random.default_rng(4)
    firsts = Counter(run_stream(Reservoir(1), 50, 50, rng).origin.popitem()[1] for _ in range(2000))
    assert len(firsts) > 40  # uniform over 50 positions, not "keep the first"
    assert stats.chisquare([firsts.get(i, 0) for i in range(50)]).pvalue > ALPHA


def test_reservoir_counts_existing_residents_as_already_seen() -> None:
    residents = [EntryInfo(i) for i in range(10)]
    decision = Reservoir(10).decide([EntryInfo(0)], residents, rng=np.random.default_rng(0))
    assert len(decision.admit) == len(decision.evict)  # full memory: admitting means replacing


# --- class-balanced ----------------------------------------------------------------------------------------


def skewed_labels(n: int, rng: np.random.Generator) -> list[str | None]:
    return [str(x) for x in rng.choice(["A", "B", "C"], size=n, p=[0.9, 0.05, 0.05])]


def test_class_balanced_counts_end_within_one_after_a_skewed_stream() -> None:
    rng = np.random.default_rng(5)
    mem = FakeMemory(ClassBalanced(60))
    labels = skewed_labels(3000, rng)
    for start in range(0, len(labels), 37):
        mem.offer(plain(labels[start : start + 37]), rng)
    counts = mem.counts()
    assert set(counts) == {"A", "B", "C"}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert sum(counts.values()) == 60


def test_class_balanced_keeps_every_item_of_a_rare_class() -> None:
    rng = np.random.default_rng(6)
    labels: list[str | None] = [str(x) for x in rng.choice(["A", "B"], size=1000)]
    for at in (10, 500, 990):
        labels[at] = "rare"
    mem = FakeMemory(ClassBalanced(61))
    for start in range(0, len(labels), 25):
        mem.offer(plain(labels[start : start + 25]), rng)
    counts = mem.counts()
    assert counts["rare"] == 3
    assert abs(counts["A"] - counts["B"]) <= 1


def test_class_balanced_each_class_either_keeps_all_or_is_within_one_of_the_largest() -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        policy = ClassBalanced(int(rng.integers(1, 30)))
        mem = FakeMemory(policy)
        classes: list[str | None] = ["a", "b", "c", "d", None][: int(rng.integers(1, 6))]
        probs = rng.dirichlet(np.ones(len(classes)) * 0.5)
        seen: Counter[str | None] = Counter()
        for _ in range(int(rng.integers(1, 30))):
            batch = [
                classes[int(i)] for i in rng.choice(len(classes), size=int(rng.integers(0, 20)), p=probs)
            ]
            seen.update(batch)
            mem.offer(plain(batch), rng)
            counts = mem.counts()
            top = max(counts.values(), default=0)
            for label, n in seen.items():
                assert counts[label] == n or counts[label] >= top - 1, (label, counts, seen)


class CurrentLargestOnly(ClassBalanced):
    """A biased fake: a class counts as full only while it is among the largest (no memory of having been)."""

    name = "current_largest_only"

    def decide(
        self, incoming: Sequence[EntryInfo], residents: Sequence[EntryInfo], *, rng: np.random.Generator
    ) -> AdmissionDecision:
        self._full = set()
        return super().decide(incoming, residents, rng=rng)


def within_class_pvalue(factory: Callable[[], AdmissionPolicy]) -> float:
    """Uniformity of class A's kept items over A's own stream, in a class-incremental stream."""
    # Half the items are A; the rest come from a new class every 50 items, which keeps pushing A below the
    # largest count. The sequence is fixed, so A's k-th item is at the same position in every repetition.
    label_rng = np.random.default_rng(8)
    labels = ["A" if label_rng.random() < 0.5 else f"c{label_rng.integers(1 + i // 50)}" for i in range(400)]
    a_ordinal = {pos: k for k, pos in enumerate(p for p, label in enumerate(labels) if label == "A")}
    kept = np.zeros(len(a_ordinal), dtype=np.int64)
    rng = np.random.default_rng(9)
    for _ in range(200):
        mem = FakeMemory(factory())
        for start in range(0, len(labels), 40):
            mem.offer(plain(labels[start : start + 40]), rng)
        kept[[a_ordinal[p] for p in mem.origin.values() if p in a_ordinal]] += 1
    return uniformity_pvalue(kept[: len(kept) // 8 * 8], buckets=8)


def test_class_balanced_keeps_a_uniform_sample_within_each_class() -> None:
    assert within_class_pvalue(lambda: ClassBalanced(24)) > ALPHA


def test_within_class_check_rejects_a_policy_that_forgets_which_classes_were_full() -> None:
    assert within_class_pvalue(lambda: CurrentLargestOnly(24)) < ALPHA


# --- priority ----------------------------------------------------------------------------------------------


def test_priority_never_loses_an_item_while_a_lower_priority_one_is_kept() -> None:
    rng = np.random.default_rng(10)
    weights = {"common": 1.0, "rare": 5.0}
    for _ in range(60):
        policy = Priority(int(rng.integers(1, 20)), class_weights=weights)
        mem = FakeMemory(policy)
        for _ in range(int(rng.integers(1, 15))):
            batch = [
                (
                    str(rng.choice(["common", "rare", "other"])),
                    frozenset({SAFETY_TAG}) if rng.random() < 0.3 else frozenset(),
                )
                for _ in range(int(rng.integers(0, 12)))
            ]
            before = dict(mem.entries)
            decision = mem.offer(batch, rng)
            lost = [before[i] for i in decision.evict]
            lost += [EntryInfo(p, *batch[p]) for p in range(len(batch)) if p not in decision.admit]
            kept_ranks = [policy.rank(e) for e in mem.entries.values()]
            for item in lost:
                assert all(rank >= policy.rank(item) for rank in kept_ranks)
                if SAFETY_TAG in item.tags:  # the headline guarantee, stated directly
                    assert all(SAFETY_TAG in e.tags for e in mem.entries.values())


def test_priority_full_of_safety_items_refuses_ordinary_and_swaps_safety() -> None:
    policy = Priority(3)
    residents = [EntryInfo(i, "x", frozenset({SAFETY_TAG})) for i in range(3)]
    rng = np.random.default_rng(11)
    assert policy.decide([EntryInfo(0, "x")], residents, rng=rng) == AdmissionDecision(admit=[], evict=[])
    decision = policy.decide([EntryInfo(0, "x", frozenset({SAFETY_TAG}))], residents, rng=rng)
    assert decision.admit == [0]
    assert len(decision.evict) == 1


def test_priority_evicts_the_lightest_class_first() -> None:
    policy = Priority(4, class_weights={"heavy": 3.0, "light": 0.5})
    residents = [EntryInfo(0, "heavy"), EntryInfo(1, "light"), EntryInfo(2, None), EntryInfo(3, "heavy")]
    decision = policy.decide([EntryInfo(0, "other")], residents, rng=np.random.default_rng(12))
    assert decision == AdmissionDecision(admit=[0], evict=[1])
    rest = [*residents[:1], *residents[2:], EntryInfo(9)]  # no "light" left; lowest is the default weight 1.0
    refused = policy.decide([EntryInfo(0, "light")], rest, rng=np.random.default_rng(0))
    assert refused == AdmissionDecision(admit=[], evict=[])
    tied = {
        tuple(policy.decide([EntryInfo(0, "other")], rest, rng=np.random.default_rng(s)).evict)
        for s in range(20)
    }
    assert tied == {(2,), (9,)}  # ties with the default weight: a random one of them makes room


# --- all policies ------------------------------------------------------------------------------------------

BOUNDED: list[Callable[[int], AdmissionPolicy]] = [
    Reservoir,
    ClassBalanced,
    lambda c: Priority(c, class_weights={"b": 2.0}),
]
ALL = [*BOUNDED, KeepAll]


def random_batch(rng: np.random.Generator) -> list[tuple[str | None, frozenset[str]]]:
    return [
        (
            [None, "a", "b", "c"][int(rng.integers(4))],
            frozenset({SAFETY_TAG}) if rng.random() < 0.2 else frozenset(),
        )
        for _ in range(int(rng.integers(0, 15)))
    ]


@pytest.mark.parametrize("factory", BOUNDED, ids=["reservoir", "class_balanced", "priority"])
def test_capacity_invariant_holds_through_deletions_and_shrinking(
    factory: Callable[[int], AdmissionPolicy],
) -> None:
    rng = np.random.default_rng(13)
    for _ in range(30):
        capacity = int(rng.integers(1, 12))
        mem = FakeMemory(factory(capacity))
        for _ in range(int(rng.integers(1, 20))):
            mem.offer(random_batch(rng), rng)
            assert len(mem.entries) <= capacity
            if rng.random() < 0.2:  # the memory forgets some entries on its own (tenant erasure)
                mem.delete([i for i in mem.entries if rng.random() < 0.5])
        # A memory reopened with a smaller capacity is shrunk by the next decision.
        smaller = factory(max(1, capacity // 2))
        smaller.load_state_dict(mem.policy.state_dict())
        mem.policy = smaller
        mem.offer(random_batch(rng), rng)
        assert smaller.capacity is not None
        assert len(mem.entries) <= smaller.capacity


@pytest.mark.parametrize("factory", ALL, ids=["reservoir", "class_balanced", "priority", "all"])
def test_same_seed_gives_the_same_decisions(factory: Callable[[int], AdmissionPolicy]) -> None:
    batches = [random_batch(np.random.default_rng(s)) for s in range(20)]

    def decisions(seed: int) -> list[AdmissionDecision]:
        mem, rng = FakeMemory(factory(8)), np.random.default_rng(seed)
        return [mem.offer(b, rng) for b in batches]

    assert decisions(14) == decisions(14)
    if factory is not KeepAll:
        assert decisions(14) != decisions(15)


def test_decision_does_not_depend_on_the_order_residents_are_listed() -> None:
    residents = [EntryInfo(i, "ab"[i % 2]) for i in range(10)]
    incoming = [EntryInfo(p, "a") for p in range(6)]
    for factory in BOUNDED:
        a = factory(10).decide(incoming, residents, rng=np.random.default_rng(0))
        b = factory(10).decide(incoming, residents[::-1], rng=np.random.default_rng(0))
        assert a == b


@pytest.mark.parametrize("factory", ALL, ids=["reservoir", "class_balanced", "priority", "all"])
def test_state_dict_round_trip_resumes_the_same_decisions(factory: Callable[[int], AdmissionPolicy]) -> None:
    batches = [random_batch(np.random.default_rng(s)) for s in range(16)]
    rng = np.random.default_rng(16)
    mem = FakeMemory(factory(10))
    for batch in batches[:8]:
        mem.offer(batch, rng)
    resumed = factory(10)
    resumed.load_state_dict(json.loads(json.dumps(mem.policy.state_dict())))
    assert resumed.state_dict() == mem.policy.state_dict()
    twin, twin_rng = copy.deepcopy(mem), copy.deepcopy(rng)
    twin.policy = resumed
    for batch in batches[8:]:
        assert mem.offer(batch, rng) == twin.offer(batch, twin_rng)


def test_reservoir_without_its_state_decides_differently() -> None:
    # The round trip above is only meaningful if losing the state would change decisions.
    mem = run_stream(Reservoir(10), 500, 50, np.random.default_rng(17))
    fresh = copy.deepcopy(mem)
    fresh.policy = Reservoir(10)  # would count only the 10 residents as seen, not 500
    rng = np.random.default_rng(18)
    assert mem.offer(plain([None] * 50), rng) != fresh.offer(plain([None] * 50), copy.deepcopy(rng))


# --- configuration and input errors ------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, -3, 2.5, True, "10", None])
@pytest.mark.parametrize("name", ["reservoir", "class_balanced", "priority"])
def test_bad_capacity_is_a_config_error_naming_it(name: str, capacity: object) -> None:
    with pytest.raises(ConfigError, match=rf"'capacity' must be an integer >= 1, got {capacity!r}"):
        make_policy(name, capacity)  # type: ignore[arg-type]


def test_keep_all_accepts_no_capacity_and_admits_everything() -> None:
    policy = make_policy("all", None)
    decision = policy.decide(
        [EntryInfo(p) for p in range(5)], [EntryInfo(i) for i in range(1000)], rng=np.random.default_rng(0)
    )
    assert decision == AdmissionDecision(admit=[0, 1, 2, 3, 4], evict=[])
    with pytest.raises(ConfigError, match="'capacity' must be an integer >= 1, got 0"):
        KeepAll(0)


def test_keep_all_with_a_capacity_keeps_the_first_items() -> None:
    decision = KeepAll(3).decide(
        [EntryInfo(p) for p in range(5)], [EntryInfo(7)], rng=np.random.default_rng(0)
    )
    assert decision == AdmissionDecision(admit=[0, 1], evict=[])


def test_unknown_policy_name_lists_the_known_ones() -> None:
    with pytest.raises(
        ConfigError,
        match="unknown admission policy 'fifo'; known: class_balanced, keep_all, priority, reservoir",
    ):
        make_policy("fifo", 10)


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"bad options for policy 'reservoir'.*class_weights"):
        make_policy("reservoir", 10, class_weights={"a": 2.0})


def test_make_policy_builds_each_policy_with_its_options() -> None:
    policy = make_policy("priority", 5, class_weights={"rare": 4.0}, default_weight=0.5)
    assert isinstance(policy, Priority)
    assert policy.class_weights == {"rare": 4.0}
    assert policy.default_weight == 0.5
    assert isinstance(make_policy("reservoir", 5), Reservoir)
    assert isinstance(make_policy("class_balanced", 5), ClassBalanced)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"class_weights": {"a": float("nan")}},
            r"'class_weights\['a'\]' must be a finite number > 0, got nan",
        ),
        ({"class_weights": {"a": -1.0}}, r"'class_weights\['a'\]' must be a finite number > 0, got -1.0"),
        ({"class_weights": {3: 2.0}}, "'class_weights' keys must be string labels, got 3"),
        ({"class_weights": [("a", 2.0)]}, "'class_weights' must be a mapping"),
        ({"default_weight": 0}, "'default_weight' must be a finite number > 0, got 0"),
    ],
)
def test_bad_priority_weights_are_config_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_policy("priority", 5, **options)


@pytest.mark.parametrize(
    "state",
    [
        {"policy": "class_balanced", "seen": [], "full": []},
        {"policy": "reservoir", "seen": -1},
        {"policy": "reservoir", "seen": "12"},
        {"policy": "reservoir"},
    ],
)
def test_bad_reservoir_state_is_rejected(state: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="state"):
        Reservoir(5).load_state_dict(state)


@pytest.mark.parametrize(
    "state",
    [
        {"policy": "class_balanced", "seen": {"a": 3}, "full": []},
        {"policy": "class_balanced", "seen": [["a", -2]], "full": []},
        {"policy": "class_balanced", "seen": [], "full": [1]},
    ],
)
def test_bad_class_balanced_state_is_rejected(state: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="state field"):
        ClassBalanced(5).load_state_dict(state)


@pytest.mark.parametrize("factory", ALL, ids=["reservoir", "class_balanced", "priority", "all"])
def test_incoming_ids_must_be_their_positions(factory: Callable[[int], AdmissionPolicy]) -> None:
    with pytest.raises(ValidationError, match=r"incoming\[1\]\.id must be its position 1, got 5"):
        factory(4).decide([EntryInfo(0), EntryInfo(5)], [], rng=np.random.default_rng(0))


@pytest.mark.parametrize("factory", ALL, ids=["reservoir", "class_balanced", "priority", "all"])
def test_repeated_resident_ids_are_rejected(factory: Callable[[int], AdmissionPolicy]) -> None:
    with pytest.raises(ValidationError, match="resident id 3 appears more than once"):
        factory(4).decide([], [EntryInfo(3), EntryInfo(1), EntryInfo(3)], rng=np.random.default_rng(0))
