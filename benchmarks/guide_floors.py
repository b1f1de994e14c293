"""The generative guide's floors on the bundled stream: one absolute cosine vs each class's own spread.

Every training example of ``configs/default.toml``'s stream (20 per class, 45 classes) goes into an
embedding-only memory; for each class, ``MemoryGuide.class_floors`` takes its real members' mean cosine
to their ``k`` nearest stored classmates and the floor is a low percentile of that. The table shows, per
task, the floors and how many of the class's own real members an absolute floor would call "outside
their class" (a rule that rejects real members cannot be a fair test of generations).

    .venv/bin/python benchmarks/guide_floors.py            # k 4, 10th percentile, absolute 0.3

Prints a table and writes benchmarks/results/guide_floors.json (with its commit, command and load).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from _harness import provenance, write_results

from rehearsal.embedding import load_encoder
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.generative.guide import MemoryGuide
from rehearsal.runner.config import RunConfig
from rehearsal.runner.loop import load_stream

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=4, help="nearest classmates per member (guide_k)")
    parser.add_argument("--percentile", type=float, default=10.0, help="the per-class floor's percentile")
    parser.add_argument("--absolute", type=float, default=0.3, help="the absolute floor compared")
    args = parser.parse_args()
    record = provenance(**vars(args))
    stream = load_stream(RunConfig.from_file(ROOT / "configs" / "default.toml"))
    train = [e for task in stream.tasks for e in task.train]
    labels = [stream.label_id(e.label) for e in train]
    with tempfile.TemporaryDirectory() as tmp:
        memory = RehearsalMemory.create(Path(tmp) / "m", embedding_only=True, encoder=load_encoder())
        vectors = np.asarray(memory.encoder.encode([e.text for e in train]), dtype=np.float32)
        memory.add(
            metadata=[{"label": y} for y in labels],
            vectors=vectors,
            sources=[f"example-{i}" for i in range(len(train))],
        )
        guide = MemoryGuide(memory, k=args.k, floor="class", percentile=args.percentile)
        floors = guide.class_floors(vectors, labels)
        # The members' own scores (class_floors' search), to count whom an absolute floor rejects.
        members: dict[int, list[float]] = {}
        for label in sorted(set(labels)):
            rows = [i for i, y in enumerate(labels) if y == label]
            hits = memory.search_vectors(vectors[rows], args.k + 1, where={"label": label})
            members[label] = [float(np.mean([h.score for h in found[1:]])) for found in hits]
        memory.close()
    rows_out = []
    print(
        f"| task | classes | per-class floor (p{args.percentile:g}) min / mean / max "
        f"| classes whose median member < {args.absolute} | real members < {args.absolute} |"
    )
    print("|---|---|---|---|---|")
    for task in stream.tasks:
        ids = [stream.label_id(lab) for lab in task.labels]
        f = [floors[i] for i in ids]
        below = sum(np.median(members[i]) < args.absolute for i in ids)
        rejected = sum(sum(s < args.absolute for s in members[i]) for i in ids)
        total = sum(len(members[i]) for i in ids)
        print(
            f"| {task.name} | {len(ids)} | {min(f):.2f} / {np.mean(f):.2f} / {max(f):.2f} "
            f"| {below} | {rejected} of {total} ({rejected / total:.0%}) |"
        )
        rows_out.append(
            {
                "task": task.name,
                "floors": {stream.labels[i]: round(floors[i], 4) for i in ids},
                "classes_median_below_absolute": int(below),
                "members_below_absolute": int(rejected),
                "members": int(total),
            }
        )
    print(f"wrote {write_results('guide_floors', {**vars(args), 'tasks': rows_out}, record)}")


if __name__ == "__main__":
    main()
