"""Key rotation on a full disk (issue 28): at every fill level, what the caller is told matches the store.

Two sweeps over one encrypted memory with its audit log, ``rehearsal rotate-key`` run in-process:

- ``fill``: a small tmpfs, mounted here (root; or pass ``--dir`` on a size-limited filesystem you made),
  its free space cut to a level (a filler file, one tmpfs page more per case); SQLite meets a real ENOSPC.
- ``inject``: a dry run lists every write the rotation makes from Python (``os.open`` for writing,
  ``os.write``, ``os.fsync``, ``os.replace``) and the SQLite steps around its commit (the rewrap inside the
  transaction, the WAL checkpoint after it); case k makes the k-th of them fail with ENOSPC ("database or
  disk is full" for SQLite's), so every point before and after the commit is hit once. A tmpfs rarely
  fails after the commit (the checkpoint frees the WAL's pages before the audit log needs one); this does.

After each case the store is checked against the answer:

- told "rotated" (exit 0) or "rotated; cleanup failed" (our CleanupError): only the new key opens it;
- told it failed with any other of our one-line errors: only the old key opens it;
- either way every record reads back, ``verify`` passes, and ``audit verify`` passes under the key that
  opens the store (after a cleanup failure that names the audit log: once ``rotate-key`` is run again with
  the same keys, the documented remedy).

A traceback, or a store in another state than the one the caller was told, is a lie.

    sudo .venv/bin/python benchmarks/rotation_full_disk.py --cases 24   # both sweeps
    .venv/bin/python benchmarks/rotation_full_disk.py --sweep inject   # no root needed
"""

from __future__ import annotations

import argparse
import errno
import io
import os
import shutil
import sqlite3
import subprocess
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from _harness import provenance, write_results  # benchmarks/ is on sys.path when run as a script

from rehearsal import KeyRing, RehearsalError, RehearsalMemory, WrongKeyError
from rehearsal.cli.main import main as cli
from rehearsal.crypto.data_keys import DataKeys
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.governance.audited import AuditedMemory
from rehearsal.store.sqlite.vault_db import VaultDatabase

DIM = 8
PAGE = 4096


def _run(argv: list[str]) -> tuple[int, str]:
    """``rehearsal ARGV`` in-process: (exit status, stderr); an exception escaping it is status -1."""
    err = io.StringIO()
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(err):
            status = cli(argv)
    except Exception as exc:  # what a user would see as a traceback
        return -1, f"{type(exc).__name__}: {exc}"
    return status, err.getvalue().strip()


def _memory(path: Path, keys: KeyRing, records: int, rng: np.random.Generator) -> dict[int, str]:
    """An audited memory of ``records`` texts over three tenants (three data keys to rewrap)."""
    texts: dict[int, str] = {}
    memory = RehearsalMemory.create(path, keys=keys, dim=DIM, encoder_name=f"synthetic-{DIM}")
    with AuditedMemory(memory, AuditLog.open(default_log_path(path), keys)) as audited:
        for t, tenant in enumerate(("alice", "bob", "carol")):
            batch = [f"{tenant} note {i}" for i in range(t, records, 3)]
            vectors = rng.standard_normal((len(batch), DIM)).astype(np.float32)
            texts.update(zip(audited.add(batch, vectors=vectors, tenant=tenant), batch, strict=True))
    return texts


def _fill(folder: Path, free: int) -> None:
    """Leave ``free`` bytes free on ``folder``'s filesystem (a filler file takes the rest)."""
    stat = os.statvfs(folder)
    left = stat.f_bavail * stat.f_frsize - free
    with open(folder / "filler", "wb") as fh:
        chunk = bytes(1 << 20)
        while left > 0:
            try:
                left -= fh.write(chunk[: min(left, len(chunk))])
            except OSError:
                break


def _opens(path: Path, keys: KeyRing, texts: dict[int, str]) -> bool | str:
    """True (opens, every record reads back, verify passes), False (wrong key), or what else it said."""
    try:
        with RehearsalMemory.open(path, keys=keys) as memory:
            if memory.texts_by_id(sorted(texts)) != texts:
                return "records differ"
            memory.verify()
    except WrongKeyError:
        return False
    except RehearsalError as exc:
        return f"{type(exc).__name__}: {exc}"
    return True


class Faults:
    """Counts the rotation's writes and makes the ``fail_at``-th fail (None: counts only); ``points``
    names each one it saw, in order."""

    def __init__(self, fail_at: int | None) -> None:
        self.fail_at, self.points, self.saved = fail_at, [], {}

    def _hit(self, name: str) -> None:
        self.points.append(name)
        if len(self.points) - 1 == self.fail_at:
            if name.startswith("sqlite"):
                raise sqlite3.OperationalError("database or disk is full")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    @staticmethod
    def _fd_name(fd: int) -> str:
        try:
            return Path(os.readlink(f"/proc/self/fd/{fd}")).name
        except OSError:
            return "?"

    def __enter__(self) -> Faults:
        real = {name: getattr(os, name) for name in ("open", "write", "fsync", "replace")}
        real_rewrap, real_checkpoint = DataKeys.rewrap_all, VaultDatabase.checkpoint
        self.saved = {**real, "rewrap": real_rewrap, "checkpoint": real_checkpoint}
        writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

        def open_(path: Any, flags: int, *a: Any, **kw: Any) -> int:
            if flags & writing:
                self._hit(f"os.open {Path(path).name}")
            return real["open"](path, flags, *a, **kw)

        def write(fd: int, data: Any) -> int:
            self._hit(f"os.write {self._fd_name(fd)}")
            return real["write"](fd, data)

        def fsync(fd: Any) -> None:
            self._hit(f"os.fsync {self._fd_name(fd if isinstance(fd, int) else fd.fileno())}")
            real["fsync"](fd)

        def replace(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
            self._hit(f"os.replace {Path(dst).name}")
            real["replace"](src, dst, *a, **kw)

        def rewrap(keys: Any, new_keys: KeyRing) -> int:
            self._hit("sqlite rewrap (before COMMIT)")
            return real_rewrap(keys, new_keys)

        def checkpoint(db: Any) -> None:
            self._hit("sqlite WAL checkpoint (after COMMIT)")
            real_checkpoint(db)

        os.open, os.write, os.fsync, os.replace = open_, write, fsync, replace  # type: ignore[assignment]
        DataKeys.rewrap_all, VaultDatabase.checkpoint = rewrap, checkpoint  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        for name in ("open", "write", "fsync", "replace"):
            setattr(os, name, self.saved[name])
        DataKeys.rewrap_all = self.saved["rewrap"]  # type: ignore[method-assign]
        VaultDatabase.checkpoint = self.saved["checkpoint"]  # type: ignore[method-assign]


def _case(
    root: Path, keyfiles: Path, label: str, records: int, seed: int, *, free: int | None, fail_at: int | None
) -> dict[str, Any]:
    old, new = KeyRing.generate(), KeyRing.generate()
    keyfiles = keyfiles / label  # a key file is never overwritten
    keyfiles.mkdir()
    old.to_file(keyfiles / "old")
    new.to_file(keyfiles / "new")
    shutil.rmtree(root / "mem", ignore_errors=True)
    (root / "filler").unlink(missing_ok=True)
    texts = _memory(root / "mem", old, records, np.random.default_rng(seed))
    if free is not None:
        _fill(root, free)
    mem, old_key, new_key = str(root / "mem"), str(keyfiles / "old"), str(keyfiles / "new")
    with Faults(fail_at) as faults:
        status, said = _run(["rotate-key", mem, "--key-file", old_key, "--new-key-file", new_key])
    (root / "filler").unlink(missing_ok=True)
    if status == 0:
        told = "rotated"
    elif status == 1 and said.startswith("rehearsal: error: rotated; cleanup failed"):
        told = "rotated; cleanup failed"
    elif status == 1 and said.startswith("rehearsal: error: ") and "\n" not in said:
        told = "failed"
    else:
        told = "traceback"
    opens_old, opens_new = _opens(root / "mem", old, texts), _opens(root / "mem", new, texts)
    key = new_key if opens_new is True else old_key
    log_ok = _run(["audit", "verify", mem, "--key-file", key])[0] == 0
    remedied = False
    if not log_ok and told == "rotated; cleanup failed" and "audit log" in said:
        remedied = _run(["rotate-key", mem, "--key-file", old_key, "--new-key-file", new_key])[0] == 0
        log_ok = _run(["audit", "verify", mem, "--key-file", key])[0] == 0
    expected = (False, True) if told.startswith("rotated") else (True, False)
    truthful = told != "traceback" and (opens_old, opens_new) == expected and log_ok
    point = None if fail_at is None else (faults.points[fail_at] if fail_at < len(faults.points) else "-")
    return {
        "case": label,
        "free_bytes": free,
        "failed_point": point,
        "points": len(faults.points),
        "told": told,
        "said": said.removeprefix("rehearsal: error: ")[:160],
        "old_key_opens": opens_old,
        "new_key_opens": opens_new,
        "audit_log_verifies": log_ok,
        "after_remedy": remedied,
        "truthful": truthful,
    }


def _mount(size: str) -> tuple[Path, bool]:
    folder = Path(tempfile.mkdtemp(prefix="rotation-full-disk-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if done.returncode != 0:
        folder.rmdir()
        raise SystemExit(
            f"cannot mount a tmpfs ({done.stderr.strip()}): run as root, or pass --dir on a small filesystem"
        )
    return folder, True


def _table(title: str, rows: list[dict[str, Any]], where: str) -> None:
    print(f"\n{title}")
    print(f"{where:<42} {'told':<24} {'old key':<8} {'new key':<8} {'log':<6} {'truthful':<8} said")
    for row in rows:
        at = str(row["free_bytes"] if where == "free bytes" else row["failed_point"])
        opened = f"{row['old_key_opens']!s:<8} {row['new_key_opens']!s:<8} {row['audit_log_verifies']!s:<6}"
        print(f"{at:<42} {row['told']:<24} {opened} {row['truthful']!s:<8} {row['said'][:60]}")


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    told: dict[str, int] = {}
    for row in rows:
        told[row["told"]] = told.get(row["told"], 0) + 1
    return {
        "cases": len(rows),
        "told": told,
        "untruthful": sum(not r["truthful"] for r in rows),
        "log_needed_remedy": sum(r["after_remedy"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", choices=("both", "fill", "inject"), default="both")
    parser.add_argument("--cases", type=int, default=24, help="fill levels: 0, 1, ... steps free")
    parser.add_argument("--step", type=int, default=PAGE, help="bytes more free space per fill level")
    parser.add_argument("--first-free", type=int, default=0, help="free bytes of the first level")
    parser.add_argument("--records", type=int, default=60)
    parser.add_argument("--size", default="4m", help="the tmpfs to mount (default: 4m)")
    parser.add_argument("--dir", type=Path, help="a folder on a size-limited filesystem (no mount then)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="rotation_full_disk", help="results/<name>.json")
    args = parser.parse_args()
    run = provenance(seeds=[args.seed], records=args.records, sweep=args.sweep)
    payload: dict[str, Any] = {}

    with tempfile.TemporaryDirectory() as scratch:
        keyfiles = Path(scratch) / "keys"
        keyfiles.mkdir()
        if args.sweep in ("both", "inject"):
            (Path(scratch) / "disk").mkdir()
            dry = _case(
                Path(scratch) / "disk", keyfiles, "dry", args.records, args.seed, free=None, fail_at=None
            )
            rows = [
                _case(
                    Path(scratch) / "disk", keyfiles, f"k{k}", args.records, args.seed, free=None, fail_at=k
                )
                for k in range(dry["points"])
            ]
            _table(f"inject: ENOSPC at each of the rotation's {dry['points']} writes", rows, "failing write")
            payload["inject"] = {"summary": _summary(rows), "rows": rows}
        if args.sweep in ("both", "fill"):
            root, mounted = (args.dir, False) if args.dir is not None else _mount(args.size)
            try:
                rows = []
                for n in range(args.cases):
                    free = args.first_free + n * args.step
                    rows.append(
                        _case(root, keyfiles, f"free{free}", args.records, args.seed, free=free, fail_at=None)
                    )
            finally:
                shutil.rmtree(root / "mem", ignore_errors=True)
                (root / "filler").unlink(missing_ok=True)
                if mounted:
                    # Lazily when busy: a handle an exception left open must not keep the mount behind.
                    if subprocess.run(["umount", str(root)], capture_output=True).returncode != 0:
                        subprocess.run(["umount", "-l", str(root)], check=False)
                    root.rmdir()
            _table(f"fill: a {args.size} tmpfs with this much free space", rows, "free bytes")
            payload["fill"] = {"summary": _summary(rows), "rows": rows, "tmpfs": args.size}
    for sweep, part in payload.items():
        print(f"{sweep}: {part['summary']}")
    path = write_results(args.name, payload, run)
    print(f"wrote {path}")
    lies = sum(part["summary"]["untruthful"] for part in payload.values())
    if lies:
        raise SystemExit(f"{lies} cases where the answer does not match the store")


if __name__ == "__main__":
    main()
