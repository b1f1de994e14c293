"""The tamper suite on PostgreSQL (issue 28): an administrator edits the server's rows while a reader and a
writer hold the memory open, and every question asked afterwards ends in the answer the undamaged memory
gave or in our own IntegrityError — never in a silently different one, and no erasure removes a row whose
tag fails.

Each case is a fresh database with alice's records (ids 0..3) and bob's (4..7). One edit (a column of one of
alice's rows changed, a row's tag or sealed text or vector swapped in from another row, a row copied in under
another id, a row deleted), then: the reader asks ``ids`` (all, and filtered by tenant, task and label), a
filtered search, the entries and the texts; the writer asks the same and then erases bob
(``forget``). The counts are printed (``-s``) and recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pytest
from conftest import unit_vectors
from postgres_fixtures import two_tenant_memory

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import RehearsalError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.testing.postgres import PostgresServer

N = 8
_names = itertools.count()
EDITS = {
    "tenant": "UPDATE rehearsal.entries SET tenant = 'bob' WHERE id = 0",
    "task": "UPDATE rehearsal.entries SET task = 'other' WHERE id = 1",
    "label": "UPDATE rehearsal.entries SET label_int = 7 WHERE id = 2",
    "tags": "UPDATE rehearsal.entries SET tags = ARRAY['pii'] WHERE id = 3",
    "extra": "UPDATE rehearsal.entries SET extra = '{\"note\": 1}' WHERE id = 0",
    "source": "UPDATE rehearsal.entries SET source = 'elsewhere' WHERE id = 1",
    "vector from another row": (
        "UPDATE rehearsal.entries SET embedding = (SELECT embedding FROM rehearsal.entries WHERE id = 5)"
        " WHERE id = 2"
    ),
    "tag from another row": (
        "UPDATE rehearsal.entries SET mac = (SELECT mac FROM rehearsal.entries WHERE id = 6) WHERE id = 3"
    ),
    "generation": "UPDATE rehearsal.entries SET added_gen = 0 WHERE id = 0",
    "row copied under another id": (
        "INSERT INTO rehearsal.entries SELECT id + 100, tenant, task, label_int, label_text, tags, extra,"
        " source, embedding, added_gen, created_at, mac FROM rehearsal.entries WHERE id = 1"
    ),
    "row moved to bob with bob's tag": (
        "UPDATE rehearsal.entries SET tenant = 'bob', mac = (SELECT mac FROM rehearsal.entries WHERE id = 4)"
        " WHERE id = 0"
    ),
    "sealed text from another row": (
        "UPDATE rehearsal.vault_records SET sealed ="
        " (SELECT sealed FROM rehearsal.vault_records WHERE id = 5) WHERE id = 1"
    ),
    "row deleted": "DELETE FROM rehearsal.entries WHERE id = 2",
}
# Edits that change an answer without any signal yet (issue 28 stays open on them); once one is fixed the
# test says so and its entry goes.
KNOWN_DIFFERENT: dict[str, str] = {}


def _questions(memory: RehearsalMemory) -> dict[str, Callable[[], Any]]:
    query = unit_vectors(np.random.default_rng(1), 1)
    return {
        "ids": lambda: memory.ids(),
        "ids by tenant": lambda: memory.ids(where={"tenant": "alice"}),
        "ids by task": lambda: memory.ids(where={"task": "support"}),
        "ids by label": lambda: memory.ids(where={"label": 1}),
        "filtered search": lambda: [
            h.id for h in memory.search_vectors(query, k=4, where={"tenant": "alice"})[0]
        ],
        "entries": lambda: {i: r.metadata() for i, r in memory.entries(list(range(N))).items()},
        "texts": lambda: memory.get_texts(list(range(N))),
    }


def _ask(question: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "answer", question()
    except RehearsalError as exc:  # ours, with its one-line message (a missing row: NotFoundError)
        return "error", type(exc).__name__


def _make(url: str, keys: KeyRing) -> None:
    two_tenant_memory(url, keys, task="support")


def _classify(got: tuple[str, Any], expected: Any) -> str:
    kind, value = got
    if kind == "error":
        return "our error"
    return "same" if value == expected else "different"


@pytest.mark.slow
def test_edits_on_live_handles_end_in_the_right_answer_or_our_error(
    postgres_server: PostgresServer, keys: KeyRing
) -> None:
    counts: Counter[str] = Counter()
    found: set[tuple[str, str]] = set()
    erased_alice = 0
    for edit, statement in EDITS.items():
        url = postgres_server.create_database(f"tamper_{next(_names)}")
        _make(url, keys)
        with (
            RehearsalMemory.open(url, keys=keys, read_only=True) as reader,
            RehearsalMemory.open(url, keys=keys) as writer,
        ):
            expected = {name: q() for name, q in _questions(reader).items()}
            _questions(writer)["ids"]()  # the writer has looked before the edit too
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(statement)
            for role, handle in (("reader", reader), ("writer", writer)):
                for name, question in _questions(handle).items():
                    outcome = _classify(_ask(question), expected[name])
                    counts[outcome] += 1
                    if outcome == "different":
                        found.add((edit, f"{role}: {name}"))
            try:
                writer.forget(tenant="bob")
            except RehearsalError:
                counts["our error"] += 1
            else:
                counts["same"] += 1
        with psycopg.connect(url, autocommit=True) as conn:
            left = conn.execute("SELECT count(*) FROM rehearsal.entries WHERE id < 4 OR id >= 100").fetchone()
        # Alice's rows (and any copy) are never erased by bob's forget, whatever the edit did to them.
        expected_left = 4 - (edit == "row deleted") + (edit == "row copied under another id")
        erased_alice += expected_left - int(left[0])
    print("\n".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    for key in sorted(found):
        print("different:", key)
    assert erased_alice == 0  # no erasure acted on a row whose tag fails
    unknown = {k for k in found if k[0] not in KNOWN_DIFFERENT}
    assert unknown == set(), sorted(unknown)
    fixed = set(KNOWN_DIFFERENT) - {edit for edit, _ in found}
    assert fixed == set(), f"no longer different (remove from KNOWN_DIFFERENT): {sorted(fixed)}"
