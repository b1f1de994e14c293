"""Read verbs of the ``rehearsal`` CLI that a vector-store user reaches for: ``get``, ``count``, ``peek``
and ``export``.

They read through the public memory API (``ids``, ``entries``, ``texts_by_id``) on a read-only handle, so
they run beside a writer. Text is decrypted only when asked for (``--with-text``); a file that holds text
is created owner-only (0600), and no verb overwrites a file.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from collections.abc import Iterator, Sequence
from typing import Any

from rehearsal.cli.common import Report, Verb, open_memory, parse_where_option
from rehearsal.cli.records import id_list, positive_int
from rehearsal.cli.vector_column import VECTOR_ENCODER_FIELD
from rehearsal.errors import NotFoundError, ValidationError
from rehearsal.memory.facade import RehearsalMemory

__all__ = ["entry_dicts", "memory_verbs"]

_EXPORT_BATCH = 512  # entries decrypted and written per step: bounded memory on a large export


def _where_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--where", metavar="JSON", help='a metadata filter, e.g. \'{"task": "billing"}\'')


def _text_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--with-text", action="store_true", help="decrypt and include each entry's text")


def entry_dicts(memory: RehearsalMemory, ids: Sequence[int], *, with_text: bool) -> list[dict[str, Any]]:
    """``{"id", **metadata[, "text"]}`` for the ids that exist, in the order of ``ids``."""
    if with_text and memory.embedding_only:
        raise ValidationError("--with-text: this memory is embedding-only and stores no text")
    rows = memory.entries(ids)
    texts = memory.texts_by_id(list(rows)) if with_text and rows else {}
    out = []
    for i in ids:
        if i in rows:
            entry: dict[str, Any] = {"id": i, **rows[i].metadata()}
            if with_text:
                entry["text"] = texts.get(i)
            out.append(entry)
    return out


def _lines(entries: list[dict[str, Any]]) -> list[str]:
    lines = []
    for entry in entries:
        meta = " ".join(
            f"{k}={json.dumps(v, ensure_ascii=False)}"
            for k, v in entry.items()
            if k not in ("id", "text") and v not in (None, [], {})
        )
        lines.append(f"id={entry['id']} {meta}".rstrip())
        if "text" in entry:
            lines.append(f"    {entry['text']}")
    return lines


# -- get / peek / count ----------------------------------------------------------------------------


def _get_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ids", type=id_list, required=True, metavar="1,2,3", help="the ids to show")
    _text_arg(p)


def _get(args: argparse.Namespace) -> Report:
    with open_memory(args, read_only=True) as memory:
        entries = entry_dicts(memory, args.ids, with_text=args.with_text)
    found = {e["id"] for e in entries}
    missing = [i for i in args.ids if i not in found]
    if not entries:
        raise NotFoundError(f"no entries with ids {missing[:10]} in {args.path!r} (deleted, or never added)")
    lines = _lines(entries) + ([f"missing: {missing}"] if missing else [])
    return Report({"path": args.path, "entries": entries, "missing": missing}, lines)


def _peek_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", type=positive_int, default=5, help="how many entries (default: 5)")
    _where_arg(p)
    _text_arg(p)


def _peek(args: argparse.Namespace) -> Report:
    where = parse_where_option(args.where)
    with open_memory(args, read_only=True) as memory:
        ids = memory.ids(where)
        entries = entry_dicts(memory, ids[: args.n], with_text=args.with_text)
    head = f"first {len(entries)} of {len(ids)} entries" + (" matching --where" if where else "")
    return Report({"path": args.path, "total": len(ids), "entries": entries}, [head, *_lines(entries)])


def _count(args: argparse.Namespace) -> Report:
    where = parse_where_option(args.where)
    with open_memory(args, read_only=True) as memory:
        count = len(memory.ids(where)) if where else len(memory)
    return Report({"path": args.path, "where": where, "count": count}, [str(count)])


# -- export ----------------------------------------------------------------------------------------


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="FILE", help="a new JSON-lines file (never overwritten)")
    _where_arg(p)
    _text_arg(p)
    p.add_argument(
        "--with-vectors",
        action="store_true",
        help="include each entry's stored vector and its encoder's name ('ingest --vector-field vector' "
        "reads them back, e.g. into an embedding-only memory); vectors are as sensitive as text",
    )


def _batches(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _EXPORT_BATCH):
        yield ids[start : start + _EXPORT_BATCH]


def _export(args: argparse.Namespace) -> Report:
    where = parse_where_option(args.where)
    with open_memory(args, read_only=True) as memory:
        if args.with_text and memory.embedding_only:
            raise ValidationError("--with-text: this memory is embedding-only and stores no text")
        ids = memory.ids(where)
        # Decrypted text (and vectors, which can be inverted into text) is as sensitive as the vault it
        # came from: owner-only, like a key file.
        sensitive = args.with_text or args.with_vectors
        mode = 0o600 if sensitive else 0o644
        try:
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            raise ValidationError(f"{args.out!r} exists; export never overwrites a file") from None
        written = 0
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                for batch in _batches(ids):
                    vectors = memory.vectors_by_id(batch) if args.with_vectors else {}
                    for entry in entry_dicts(memory, batch, with_text=args.with_text):
                        if args.with_vectors:
                            entry["vector"] = [round(float(x), 7) for x in vectors[entry["id"]]]
                            entry[VECTOR_ENCODER_FIELD] = memory.encoder_name
                        fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
                        written += 1
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            os.unlink(args.out)  # no half-written export left behind
            raise
    data = {"path": args.path, "out": args.out, "exported": written, "with_text": args.with_text}
    data["with_vectors"] = args.with_vectors
    data.update(where=where, file_mode=f"{stat.S_IMODE(os.stat(args.out).st_mode):04o}")
    carried = [name for name, on in (("text", args.with_text), ("vectors", args.with_vectors)) if on]
    what = f"entries with their {' and '.join(carried)}" if carried else "entries (metadata only)"
    line = f"exported {written} {what} to {args.out}"
    lines = (
        [line, f"the file holds decrypted {' and '.join(carried)}: it was created owner-only (0600)"]
        if sensitive
        else [line]
    )
    return Report(data, lines)


def memory_verbs() -> dict[str, Verb]:
    return {
        "get": Verb("show entries by id: metadata, and text with --with-text", _get_args, _get),
        "peek": Verb("show the first few entries", _peek_args, _peek),
        "count": Verb("how many entries (matching --where)", _where_arg, _count),
        "export": Verb("write entries to a new JSON-lines file", _export_args, _export),
    }
