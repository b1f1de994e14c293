"""An embedding-only memory: it keeps vectors and a reference per record; the text stays with its owner.

    python examples/embedding_only_privacy.py [--out indexes/embedding-only-demo]

A few WordNet glosses stand in for the records of a system of record the data owner controls (here a
dict; in practice their database). The memory stores each record's embedding, sealed under a key, and an
opaque `source` reference; at replay time a resolver fetches the texts by reference. When the owner erases
a record, the resolver answers None and the memory skips the entry and purges it. A second memory,
without keys, shows what the key changes on disk. Both are made in `--out` (a new or empty folder) or in
a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import rehearsal as rh

SUMMARY = """\
What this protects: no text enters the memory's folder, and erasing a record in the system of record
removes it from replay and from the memory at the next resolve. What it does not: embeddings can be
inverted into text (Vec2Text recovers 92% of 32-token texts exactly from GTR embeddings; see
indexes/README.md), so without keys this folder is as sensitive as the text, in plain bytes. With keys
the vectors and the index snapshot are sealed with AES-256-GCM, but metadata and `source` strings stay
plain (keep personal data out of them), and anyone who can query the memory learns which records are
near a query."""


def vectors_at_rest(folder: Path) -> str:
    """How the vectors sit on disk: the snapshot's sealed flag and the size of one stored vector."""
    sealed = (folder / "index.snap").read_bytes()[16] & 1  # header: magic (8) | generation (8) | flags
    db = sqlite3.connect(f"file:{folder / 'memory.sqlite'}?mode=ro", uri=True)
    (blob,) = db.execute("SELECT vector FROM entries LIMIT 1").fetchone()
    db.close()
    return f"index.snap sealed={bool(sealed)}, a stored vector is {len(blob)} bytes"


def run(folder: Path) -> None:
    stream = rh.load_wordnet_stream(max_train_per_class=1, tasks=["living", "verbs"])
    examples = [e for task in stream.tasks for e in task.train]
    # The system of record: opaque references -> texts. Only the references go into the memory.
    records = {f"doc-{i:03d}": e.text for i, e in enumerate(examples)}

    def resolve(sources: list[str]) -> list[str | None]:
        return [records.get(source) for source in sources]  # None: erased by the owner

    memory = rh.RehearsalMemory.create(
        folder / "sealed", embedding_only=True, keys=rh.KeyRing.generate(), resolver=resolve
    )
    # The texts are embedded here and dropped; precomputed vectors can be passed as vectors= instead.
    memory.add(list(records.values()), sources=list(records), metadata=[{"task": e.task} for e in examples])
    memory.checkpoint()
    stored = b"".join(f.read_bytes() for f in (folder / "sealed").iterdir() if f.is_file())
    found = sum(text.encode() in stored for text in records.values())
    print(f"memory: {len(memory)} records; texts found in its files: {found} of {len(records)}")

    query = "have a glass of wine with dinner every evening"
    hits = memory.search([query], k=3)[0]
    texts = memory.texts_by_id([h.id for h in hits])
    print(f"replay for {query!r}:")
    for hit in hits:
        print(f"  id {hit.id} ({hit.metadata['source']}, score {hit.score:.2f}): {texts[hit.id]}")

    erased, source = hits[0], hits[0].metadata["source"]
    del records[source]  # the data subject asked the owner to erase this record
    before = len(memory)
    hits = memory.search([query], k=3)[0]  # the index still finds the entry...
    texts = memory.texts_by_id([h.id for h in hits])  # ...the resolver answers None: skipped and purged
    print(f"after erasing {source} upstream: replay got {len(texts)} texts for {len(hits)} hits")
    print(
        f"  erased id {erased.id} skipped: {erased.id not in texts}; still held: {erased.id in memory.ids()}"
    )
    print(f"  records: {before} -> {len(memory)}")
    memory.close()

    plain = rh.RehearsalMemory.create(folder / "plain", embedding_only=True)  # no keys: for contrast
    plain.add([examples[0].text], sources=["doc-000"])
    plain.close()
    print(f"with keys:    {vectors_at_rest(folder / 'sealed')}")
    print(f"without keys: {vectors_at_rest(folder / 'plain')} (float16, readable)")
    print()
    print(SUMMARY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, help="a new or empty folder for the memories (default: temporary)"
    )
    args = parser.parse_args()
    if args.out is not None and args.out.is_dir() and any(args.out.iterdir()):
        parser.error(f"--out {str(args.out)!r} is not empty; give a new or empty folder")
    if args.out is not None:
        run(args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp))


if __name__ == "__main__":
    main()
