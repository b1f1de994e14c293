"""Crash safety: a writer SIGKILLed at random moments leaves a memory that opens, verifies and holds every
acknowledged add.

The child adds batches of precomputed vectors (no model load), and after each add returns appends the
acknowledged ids and texts to a log with fsync; deletions are logged as an intent before the call and as
done after it. The parent kills the child after a random delay, reopens the same growing memory, runs
``verify()`` and checks every acknowledged id against its text. ``benchmarks/crash_stress.py`` runs the
same loop 200 times.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory

REPO = Path(__file__).resolve().parents[1]
DIM = 32
KILLS = 30

CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from rehearsal.crypto.keys import KeyRing
    from rehearsal.memory.facade import RehearsalMemory

    path, key, log_path, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rng = np.random.default_rng(seed)
    mem = RehearsalMemory.open(path, keys=KeyRing.from_base64(key))
    log = open(log_path, "a", encoding="utf-8")

    def record(line):
        log.write(line)
        log.flush()
        os.fsync(log.fileno())

    print("ready", flush=True)
    step = 0
    while True:
        step += 1
        n = int(rng.integers(1, 64))
        texts = [f"run {seed} step {step} item {j} {rng.integers(1 << 40)}" for j in range(n)]
        vectors = rng.standard_normal((n, DIM)).astype(np.float32)
        ids = mem.add(texts, vectors=vectors, metadata=[{"task": f"t{step % 3}"}] * n,
                      tenant=f"tenant{seed % 3}")
        record("".join(f"add\\t{i}\\t{t}\\n" for i, t in zip(ids, texts)))
        if step % 5 == 0:
            doomed = ids[: max(1, n // 4)]
            record("".join(f"intent\\t{i}\\n" for i in doomed))
            mem.delete(doomed)
            record("".join(f"deleted\\t{i}\\n" for i in doomed))
        if step % 7 == 0:
            mem.checkpoint()
    """
).replace("DIM", str(DIM))


def read_log(path: Path) -> tuple[dict[int, str], set[int], set[int]]:
    """(acknowledged id -> text, ids whose deletion may have happened, ids certainly deleted)."""
    added: dict[int, str] = {}
    maybe: set[int] = set()
    deleted: set[int] = set()
    if not path.exists():
        return added, maybe, deleted
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # torn by the kill: that add was never acknowledged
        kind, *rest = line.rstrip("\n").split("\t")
        if kind == "add":
            added[int(rest[0])] = rest[1]
        elif kind == "intent":
            maybe.add(int(rest[0]))
        else:
            deleted.add(int(rest[0]))
    return added, maybe, deleted


def check_memory(path: Path, keys: KeyRing, log: Path, *, read_only: bool) -> int:
    added, maybe, deleted = read_log(log)
    with RehearsalMemory.open(path, keys=keys, read_only=read_only) as mem:
        report = mem.verify()
        present = mem.texts_by_id(sorted(added))
        for entry_id, text in added.items():
            if entry_id in deleted:
                assert entry_id not in present, f"deleted id {entry_id} came back"
            elif entry_id not in maybe:
                assert present.get(entry_id) == text, f"acknowledged id {entry_id} lost or altered"
        assert report["entries"] == len(mem)
        return len(mem)


def crash_loop(path: Path, keys: KeyRing, log: Path, *, kills: int, seed: int, max_delay: float) -> list[int]:
    """Kill a writing child ``kills`` times; returns the memory's size after each recovery."""
    rng = np.random.default_rng(seed)
    sizes: list[int] = []
    for round_no in range(kills):
        argv = [str(path), keys.export_base64(), str(log), str(seed * 1000 + round_no)]
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, *argv],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            if round_no % 4 == 3:
                # Kill at any moment, including inside open (delta replay, lock, stale temp cleanup).
                time.sleep(float(rng.uniform(0.0, 0.6)))
            else:
                assert child.stdout is not None
                assert child.stdout.readline().strip() == "ready", child.stderr and child.stderr.read()
                time.sleep(float(rng.uniform(0.0, max_delay)))
            if child.poll() is not None:
                raise AssertionError(f"child exited on its own: {child.communicate()[1]}")
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.communicate()
        sizes.append(check_memory(path, keys, log, read_only=round_no % 3 != 0))
    return sizes


def test_writer_killed_30_times_loses_no_acknowledged_add(tmp_path: Path, keys: KeyRing) -> None:
    path = tmp_path / "mem"
    RehearsalMemory.create(path, keys=keys, dim=DIM, encoder_name=f"synthetic-{DIM}").close()
    log = tmp_path / "acks.log"
    sizes = crash_loop(path, keys, log, kills=KILLS, seed=1, max_delay=0.4)
    added, _, deleted = read_log(log)
    # The kills hit a store that grew: most rounds acknowledged adds before dying.
    assert len(added) > 10 * KILLS
    assert sizes[-1] > sizes[0]
    with RehearsalMemory.open(path, keys=keys) as mem:
        mem.verify()
        assert set(mem.ids()) >= set(added) - set(deleted) - read_log(log)[1]
    assert not [p for p in os.listdir(path) if ".tmp-" in p]
