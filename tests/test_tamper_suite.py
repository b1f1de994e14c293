"""The tamper suite (issue 13): every file of a memory, damaged every way we can think of, ends in the
correct answer or in our own IntegrityError / StoreFormatError, never in a silently different one.

The memory is encrypted, has an audit log, and is copied as a writer killed with three commits still in
its WAL would leave it. For each file (database, WAL, snapshot, manifest, head, audit log and its head):
a seeded sample of single-byte flips, two truncations, deletion, and the same file from another memory
made under the same key; then the SQL edits of the issue. Each case opens the copy as the audited CLI
verbs do, runs searches (plain and filtered), reads texts and metadata, verifies the memory and its log,
and compares everything with what the undamaged copy answered.

The counts are printed (run with ``-s``) and recorded in benchmarks/RESULTS.md. The memories' bytes differ
from run to run (random keys, ids and nonces), so each run samples other offsets.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal import IntegrityError, KeyRing, RehearsalMemory, StoreFormatError
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.governance.audited import AuditedMemory

DIM = 16
# 40 keeps the suite near 30 s; set TAMPER_FLIPS for a deeper one-off run.
FLIPS_PER_FILE = int(os.environ.get("TAMPER_FLIPS", "40"))
FILES = (
    "memory.sqlite",
    "memory.sqlite-wal",
    "index.snap",
    "memory.json",
    "memory.gen",
    "audit.log",
    "audit.log.head",
)
FILTERS: tuple[dict[str, Any] | None, ...] = (None, {"tenant": "bob"}, {"label": 1}, {"task": "t0"})
SQL_EDITS = (
    "UPDATE entries SET tenant = 'bob', label = 2 WHERE id = 1",
    "UPDATE entries SET tenant = 'alice' WHERE id = 12",
    "UPDATE entries SET label = 0 WHERE id = 4",
    "UPDATE entries SET task = 't1' WHERE id = 2",
    "UPDATE entries SET tags = '[]' WHERE id = 3",
    "UPDATE entries SET extra = '{}' WHERE id = 5",
    "UPDATE entries SET source = 'x' WHERE id = 6",
    "UPDATE entries SET added_gen = 0 WHERE id = 30",
    "UPDATE mem_meta SET value = '2' WHERE key = 'generation'",
    "UPDATE mem_meta SET value = '5' WHERE key = 'next_id'",
    "DELETE FROM entries WHERE id = 7",
    "DELETE FROM vault_records WHERE id = 8",
    "DELETE FROM removed",
    "INSERT INTO removed (id, gen) VALUES (9, 99)",
)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _killed_writer_copy(path: Path, keys: KeyRing, seed: int, target: Path) -> None:
    """A memory whose writer committed (audited) and was then 'killed': its files copied while it was open."""
    rng = np.random.default_rng(seed)

    def add(audited: AuditedMemory, tenant: str, n: int) -> None:
        meta = [{"label": i % 3, "task": f"t{i % 2}", "tags": ["x"], "note": f"n{i}"} for i in range(n)]
        texts = [f"{tenant} text {seed} {i}" for i in range(n)]
        audited.add(texts, vectors=_unit(rng, n), metadata=meta, tenant=tenant)

    memory = RehearsalMemory.create(path, keys=keys, dim=DIM, encoder_name="synthetic-16")
    with AuditedMemory(memory, AuditLog.open(default_log_path(path), keys)) as audited:
        add(audited, "alice", 12)
        add(audited, "bob", 12)
        audited.delete([10])
    audited = AuditedMemory(
        RehearsalMemory.open(path, keys=keys), AuditLog.open(default_log_path(path), keys)
    )
    for tenant in ("alice", "bob", "carol"):
        add(audited, tenant, 4)
    target.mkdir()
    for name in FILES:
        shutil.copyfile(path / name, target / name)
    audited.memory.close()


def _answer(path: Path, keys: KeyRing, queries: np.ndarray) -> tuple[list[Any], Exception | None]:
    """Everything a user of the memory would see, step by step, then what ``verify`` (memory and log)
    says: (the steps' answers, None), or (the answers before our error, the error)."""
    out: list[Any] = []
    try:
        memory = RehearsalMemory.open(path, keys=keys)
        log = AuditLog.open(default_log_path(path), keys, create=False)
        with AuditedMemory(memory, log) as audited:
            mem = audited.memory
            out += [len(mem), mem.generation]
            for where in FILTERS:
                hits = mem.search_vectors(queries, 6, where=where)
                out.append([[(h.id, round(h.score, 5), sorted(h.metadata.items())) for h in r] for r in hits])
                out.append(mem.get_texts(sorted({h.id for row in hits for h in row})))
            out.append(sorted(mem.group_ids("label").items()))
            out.append(sorted(mem.verify().items()))
            out.append(log.verify())
    except (IntegrityError, StoreFormatError) as exc:
        return out, exc
    return out, None


Case = tuple[str, Callable[[Path], None]]


def _flip(name: str, offset: int, mask: int) -> Case:
    def damage(folder: Path) -> None:
        with open(folder / name, "r+b") as fh:
            fh.seek(offset)
            byte = fh.read(1)
            fh.seek(offset)
            fh.write(bytes([byte[0] ^ mask]))

    return f"flip {name}@{offset}^{mask:#x}", damage


def _cases(origin: Path, other: Path, rng: np.random.Generator) -> list[Case]:
    cases: list[Case] = []
    for name in FILES:
        size = (origin / name).stat().st_size
        offsets = rng.choice(size, size=min(size, FLIPS_PER_FILE), replace=False)
        cases += [_flip(name, int(o), int(rng.integers(1, 256))) for o in sorted(offsets)]
        for keep in (size // 2, size - 1):
            cases.append((f"truncate {name} to {keep}", lambda f, n=name, k=keep: _truncate(f / n, k)))
        cases.append((f"delete {name}", lambda f, n=name: (f / n).unlink()))
        cases.append((f"swap {name}", lambda f, n=name: shutil.copyfile(other / n, f / n)))
    for statement in SQL_EDITS:
        cases.append((f"sql {statement}", lambda f, s=statement: _sql(f, s)))
    return cases


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


def _sql(folder: Path, statement: str) -> None:
    conn = sqlite3.connect(folder / "memory.sqlite", isolation_level=None)
    conn.execute(statement)
    conn.close()


def test_every_damaged_file_ends_in_the_right_answer_or_our_own_error(tmp_path: Path, keys: KeyRing) -> None:
    _killed_writer_copy(tmp_path / "a-live", keys, 1, tmp_path / "origin")
    _killed_writer_copy(tmp_path / "b-live", keys, 2, tmp_path / "other")
    queries = _unit(np.random.default_rng(3), 4)
    pristine = tmp_path / "pristine"
    shutil.copytree(tmp_path / "origin", pristine)
    truth, failed = _answer(pristine, keys, queries)
    assert failed is None
    assert truth[0] == 35  # 24 - 1 + 12: the WAL's commits count

    outcomes: Counter[str] = Counter()
    wrong: list[str] = []
    for number, (label, damage) in enumerate(
        _cases(tmp_path / "origin", tmp_path / "other", np.random.default_rng(4))
    ):
        copy = tmp_path / f"case{number}"
        shutil.copytree(tmp_path / "origin", copy)
        damage(copy)
        try:
            answer, failed = _answer(copy, keys, queries)
        except Exception as exc:
            wrong.append(f"{label}: {type(exc).__name__}: {exc}")
        else:
            if failed is None and answer == truth:
                outcomes["correct answer"] += 1
            elif failed is None:
                wrong.append(f"{label}: a different answer, silently")
            elif answer == truth[: len(answer)]:
                step = "on open" if not answer else f"at step {len(answer)}"
                outcomes[f"detected {step} ({type(failed).__name__})"] += 1
            else:
                # A read answered differently before a later read or verify() raised: a wrong answer too.
                wrong.append(f"{label}: a read differed before {type(failed).__name__} was raised")
        shutil.rmtree(copy)
    tried = sum(outcomes.values()) + len(wrong)
    print(f"\ntamper suite: {tried} cases, {dict(outcomes)}, {len(wrong)} wrong")
    assert not wrong, "\n".join(wrong)
