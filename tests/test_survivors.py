"""Small tests written to kill mutants that survived ``scripts/mutation.py``: each pins a behaviour the
other tests left loose (a boundary, a field named in an error, a count kept in a state)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import rehearsal as rh
from rehearsal.memory.policies import EntryInfo
from rehearsal.store.where import parse_where as compile_where

# -- filters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", [{"id": "3"}, {"id": {"$ne": "3"}}, {"id": {"$in": [1, "3"]}}])
def test_an_id_filter_takes_only_ints(where: dict[str, Any]) -> None:
    with pytest.raises(rh.ValidationError, match="filter value for 'id' must be int, got '3'"):
        compile_where(where)


# -- metrics -----------------------------------------------------------------------------------------


def test_an_accuracy_of_exactly_one_or_zero_is_recorded() -> None:
    m = rh.AccuracyMatrix(["a"])
    m.record(0, 0, 1.0)
    assert m.average_accuracy() == 1.0
    m.record(0, 0, 0)
    assert m.average_accuracy() == 0.0


def test_matrices_with_the_same_tasks_but_other_accuracies_differ() -> None:
    a, b = rh.AccuracyMatrix(["x", "y"]), rh.AccuracyMatrix(["x", "y"])
    a.record(0, 0, 0.5)
    b.record(0, 0, 0.6)
    assert a != b
    b.record(0, 0, 0.5)
    assert a == b
    assert rh.AccuracyMatrix(["x", "z"]) != rh.AccuracyMatrix(["x", "y"])


def test_an_empty_task_name_is_rejected() -> None:
    with pytest.raises(rh.ValidationError, match="distinct non-empty strings"):
        rh.AccuracyMatrix(["a", ""])


def test_forward_transfer_names_the_task_whose_look_ahead_is_missing() -> None:
    m = rh.AccuracyMatrix(["a", "b", "c"])
    for i in range(3):
        for j in range(i + 1):
            m.record(i, j, 0.5)
    m.record(0, 1, 0.4)  # R[a][b] measured, R[b][c] not
    with pytest.raises(rh.ValidationError, match="accuracy on 'c' after 'b'"):
        m.forward_transfer([0.1, 0.1, 0.1])


@pytest.mark.parametrize("matrix", [[[0.1, 0.2], [0.3]], [[0.1, 0.2], [0.3, 0.4, 0.5]], [[0.1, 0.2], 0.3]])
def test_from_dict_rejects_rows_of_the_wrong_length(matrix: list[Any]) -> None:
    with pytest.raises(rh.ValidationError, match="'matrix' must be 2 rows of 2 values"):
        rh.AccuracyMatrix.from_dict({"task_names": ["a", "b"], "matrix": matrix})


def test_markdown_shows_three_decimals_by_default() -> None:
    m = rh.AccuracyMatrix(["a"])
    m.record(0, 0, 0.5)
    assert m.to_markdown().splitlines()[-1] == "| a | 0.500 |"


# -- admission policies ------------------------------------------------------------------------------


def _items(labels: list[str | None]) -> list[EntryInfo]:
    return [EntryInfo(i, label) for i, label in enumerate(labels)]


def test_class_balanced_state_lists_labels_unlabelled_first_then_by_name() -> None:
    policy = rh.ClassBalanced(100)
    policy.decide(_items(["b", "a", None, "", "A", "b"]), [], rng=np.random.default_rng(0))
    state = policy.state_dict()
    # Counts are what was offered, label by label (a label seen for the first time starts from zero).
    assert state["seen"] == [[None, 1], ["", 1], ["A", 1], ["a", 1], ["b", 2]]


def test_reservoir_counts_every_item_offered_from_zero() -> None:
    policy = rh.Reservoir(3)
    policy.decide(_items(["a"] * 2), [], rng=np.random.default_rng(0))
    assert policy.state_dict()["seen"] == 2


@pytest.mark.parametrize(
    ("policy", "state", "message"),
    [
        (
            rh.Reservoir(3),
            {"policy": "class_balanced"},
            "state is for policy 'class_balanced', not 'reservoir'",
        ),
        (rh.Reservoir(3), {"policy": "reservoir", "seen": -1}, "state field 'seen' must be an integer >= 0"),
        (rh.ClassBalanced(3), {"policy": "class_balanced", "seen": [[5, 1]], "full": []}, "list of \\[label"),
        (
            rh.ClassBalanced(3),
            {"policy": "class_balanced", "seen": [["a", 1, 2]], "full": []},
            "list of \\[label",
        ),
        (rh.ClassBalanced(3), {"policy": "class_balanced", "seen": [["a"]], "full": []}, "list of \\[label"),
        (
            rh.ClassBalanced(3),
            {"policy": "class_balanced", "seen": [["a", -2]], "full": []},
            "state field \"seen\\['a'\\]\" must be an integer",
        ),
    ],
)
def test_a_bad_policy_state_is_refused_naming_what_is_wrong(
    policy: rh.AdmissionPolicy, state: dict[str, Any], message: str
) -> None:
    with pytest.raises(rh.ValidationError, match=message):
        policy.load_state_dict(state)


@pytest.mark.parametrize("weight", [True, "2", float("nan")])
def test_priority_weights_must_be_finite_positive_numbers(weight: Any) -> None:
    with pytest.raises(rh.ConfigError, match="must be a finite number > 0"):
        rh.Priority(5, class_weights={"a": weight})
    with pytest.raises(rh.ConfigError, match="'default_weight' must be a finite number > 0"):
        rh.Priority(5, default_weight=weight)


def test_priority_fills_an_empty_memory_to_capacity() -> None:
    decision = rh.Priority(4).decide(_items(["a", "b", "c", "d", "e"]), [], rng=np.random.default_rng(0))
    assert len(decision.admit) == 4
    assert decision.evict == []


# -- replay selection --------------------------------------------------------------------------------

DIM = 8


@pytest.fixture
def replay_memory(tmp_path: Any) -> Any:
    """60 entries of an old task in 4 labels, 20 of the current one; writable, so a test can add more."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(80, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    meta = [{"task": "old" if i < 60 else "current", "label": i % 4} for i in range(80)]
    with rh.RehearsalMemory.create(tmp_path / "m", embedding_only=True, dim=DIM) as memory:
        memory.add(vectors=vectors, metadata=meta, sources=[f"doc-{i}" for i in range(80)])
        memory.vectors = vectors  # type: ignore[attr-defined]
        yield memory


def _selector(memory: Any, **config: Any) -> Any:
    from rehearsal.replay.selector import ReplaySelector

    return ReplaySelector(memory, rh.ReplayConfig(**config), eligible={"task": "old"})


def test_replay_sees_entries_added_after_its_first_selection(replay_memory: Any) -> None:
    selector = _selector(replay_memory, mode="random", balance="uniform")
    first = selector.select(replay_memory.vectors[:1], 100, rng=np.random.default_rng(0))
    assert len(first) == 60
    new = replay_memory.add(
        vectors=replay_memory.vectors[:5], metadata=[{"task": "old", "label": 9}] * 5, sources=["n"] * 5
    )
    again = selector.select(replay_memory.vectors[:1], 100, rng=np.random.default_rng(0))
    assert set(new) <= set(again.ids)
    assert len(again) == 65


def test_class_balanced_draws_start_from_a_seeded_label_not_always_the_first(replay_memory: Any) -> None:
    selector = _selector(replay_memory, mode="random", balance="class")
    firsts = set()
    for seed in range(20):
        choice = selector.select(replay_memory.vectors[:1], 1, rng=np.random.default_rng(seed))
        firsts.add(choice.metadata[choice.ids[0]]["label"])
    assert firsts == {0, 1, 2, 3}


def test_retrieval_fills_every_slot_from_the_index_when_k_is_large(replay_memory: Any) -> None:
    # k above the memory's default search depth: all 24 picks still come from the search (finite scores).
    selector = _selector(replay_memory, mode="retrieval", k=24)
    choice = selector.select(replay_memory.vectors[60:61], 24, rng=np.random.default_rng(0))
    assert len(choice) == 24
    assert all(np.isfinite(choice.scores))


def test_retrieval_on_fewer_entries_than_k_returns_them_all(replay_memory: Any) -> None:
    from rehearsal.replay.selector import ReplaySelector

    selector = ReplaySelector(
        replay_memory, rh.ReplayConfig(mode="retrieval", k=8), eligible={"id": {"$lt": 3}}
    )
    choice = selector.select(replay_memory.vectors[60:62], 6, rng=np.random.default_rng(0))
    assert sorted(choice.ids) == [0, 1, 2]


@pytest.mark.parametrize(("batch", "want", "searched"), [(24, 4, 8), (24, 10, 20), (5, 10, 5)])
def test_retrieval_searches_only_the_rows_round_robin_can_reach(
    replay_memory: Any, monkeypatch: pytest.MonkeyPatch, batch: int, want: int, searched: int
) -> None:
    """The search is replay's per-step cost: max(8, 2 x retrieval slots) rows of the batch, at most."""
    rows: list[int] = []
    real = replay_memory.search_vectors

    def counting(vectors: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        rows.append(len(vectors))
        return real(vectors, *args, **kwargs)

    monkeypatch.setattr(replay_memory, "search_vectors", counting)
    selector = _selector(replay_memory, mode="retrieval", k=4)
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(batch, DIM)).astype(np.float32)
    selector.select(queries / np.linalg.norm(queries, axis=1, keepdims=True), want, rng=rng)
    assert rows == [searched]


# -- sealing -----------------------------------------------------------------------------------------


def test_record_aad_ends_with_the_8_byte_big_endian_record_id() -> None:
    from rehearsal.crypto.keys import record_aad, record_aad_prefix

    prefix = record_aad_prefix(b"s" * 16, "acme", 3, "text")
    assert record_aad(b"s" * 16, 258, "acme", 3, "text") == prefix + b"\x00" * 6 + b"\x01\x02"


def test_derived_keys_are_hkdf_under_the_documented_label() -> None:
    # A format promise: keys derived today must be derived the same way by every later version.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    master = bytes(range(32))
    expected = HKDF(hashes.SHA256(), 32, salt=None, info=b"rehearsal/derive/v1/audit-hmac").derive(master)
    assert rh.KeyRing.from_bytes(master).derive_key("audit-hmac") == expected


@pytest.mark.parametrize(
    ("length", "ok"), [(16, True), (15, False), (8160, True), (8161, False), ("32", False)]
)
def test_derived_key_length_bounds(length: Any, ok: bool) -> None:
    keys = rh.KeyRing.generate()
    if ok:
        assert len(keys.derive_key("x", length)) == length
    else:
        with pytest.raises(rh.ValidationError, match=r"length must be an int in \[16, 8160\]"):
            keys.derive_key("x", length)


def test_a_key_provider_that_is_not_callable_is_named() -> None:
    with pytest.raises(rh.ValidationError, match="key provider must be callable, got bytes"):
        rh.KeyRing.from_provider(b"0" * 32)  # type: ignore[arg-type]


def test_vault_repr_says_where_and_whether_read_only(tmp_path: Any) -> None:
    import sqlite3

    from rehearsal.store.sqlite.texts import Vault

    keys = rh.KeyRing.generate()
    with Vault.create(tmp_path / "v", keys) as vault:
        assert repr(vault).startswith(f"Vault(path={str(tmp_path / 'v')!r}, store_id=")
        assert "read_only" not in repr(vault)
    with Vault.open(tmp_path / "v", keys, read_only=True) as vault:
        assert repr(vault).endswith(", read_only=True)")
    attached = Vault.attach(sqlite3.connect(":memory:", isolation_level=None), keys, create=True)
    assert repr(attached).startswith("Vault(path=<attached>, store_id=")
    assert "key=<redacted>" in repr(attached)
    assert keys.export_base64() not in repr(attached)


def test_tenant_of_answers_for_more_ids_than_one_statement_binds_and_repeats(tmp_path: Any) -> None:
    from rehearsal.store.sqlite.texts import Vault

    with Vault.create(tmp_path / "v", rh.KeyRing.generate()) as vault:
        # Two statements' worth and more (900 ids each), and ids asked twice.
        vault.put(list(range(2000)), ["t"] * 2000, tenant="acme")
        vault.put([2000], ["u"], tenant="globex")
        owners = vault.tenant_of([*range(2001), 5, 2000])
        assert len(owners) == 2001
        assert owners[1999] == owners[5] == "acme"
        assert owners[2000] == "globex"


def test_hybrid_without_a_task_filter_fills_up_without_the_batch_own_rows(replay_memory: Any) -> None:
    # The batch is 8 stored entries: the search finds them as its own copies, and the random fill must
    # then deliver everything else, exactly, none of the 8 included.
    from rehearsal.replay.selector import ReplaySelector

    own = list(range(10, 18))
    config = rh.ReplayConfig(mode="hybrid", random_share=0.5, k=4, balance="uniform")
    selector = ReplaySelector(replay_memory, config)
    choice = selector.select(replay_memory.vectors[own], 72, rng=np.random.default_rng(0))
    assert len(set(choice.ids)) == 72
    assert not set(choice.ids) & set(own)


def test_hybrid_draws_its_random_share_at_random(replay_memory: Any) -> None:
    selector = _selector(replay_memory, mode="hybrid", random_share=0.5, k=8)
    choice = selector.select(replay_memory.vectors[:4], 8, rng=np.random.default_rng(0))
    assert len(choice) == 8
    assert int(np.isnan(choice.scores).sum()) == 4  # random picks carry no similarity


def test_a_memory_of_one_eligible_entry_replays_it_and_nothing_asked_gives_empty_lists(
    replay_memory: Any,
) -> None:
    from rehearsal.replay.selector import ReplaySelector

    one = ReplaySelector(replay_memory, rh.ReplayConfig(mode="random"), eligible={"id": 7})
    assert one.select(replay_memory.vectors[:1], 3, rng=np.random.default_rng(0)).ids == [7]
    empty = one.select(replay_memory.vectors[:1], 0, rng=np.random.default_rng(0))
    assert (empty.ids, empty.scores) == ([], [])


def test_a_memory_holding_a_single_entry_is_replayed(tmp_path: Any) -> None:
    from rehearsal.replay.selector import ReplaySelector

    with rh.RehearsalMemory.create(tmp_path / "one", embedding_only=True, dim=DIM) as memory:
        memory.add(vectors=np.eye(1, DIM, dtype=np.float32), metadata=[{"task": "old"}], sources=["a"])
        choice = ReplaySelector(memory, rh.ReplayConfig(mode="hybrid")).select(
            np.eye(1, DIM, 1, dtype=np.float32), 2, rng=np.random.default_rng(0)
        )
        assert choice.ids == [0]
