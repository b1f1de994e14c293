"""Build rehearsal/data/sentiment_stream.jsonl.gz, the bundled 4-domain sentiment stream (shared labels).

The source is the human-rated sentence data of the VADER paper (Hutto & Gilbert, ICWSM 2014), which the
``vaderSentiment`` 3.3.2 source distribution carries as ``additional_resources/hutto_ICWSM_2014.tar.gz``:
four domains (tweets, movie-review sentences, product-review sentences, newspaper opinion sentences), each
sentence with the mean of >= 20 raters' scores on a -4..+4 scale. Every domain becomes one task with the
same three labels (negative / neutral / positive), so the stream is domain-incremental. Fetch the source
distribution with pip (no other network is needed) and run from the repository root::

    pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d /tmp/vader
    .venv/bin/python scripts/prepare_sentiment.py --sdist /tmp/vader/vaderSentiment-3.3.2.tar.gz

The output is byte-for-byte reproducible for the same source archive, seed and numpy version.
"""

from __future__ import annotations

import argparse
import gzip
import html
import io
import json
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "rehearsal" / "data" / "sentiment_stream.jsonl.gz"
INNER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
# task name -> file in the inner archive, in stream order: social media first, edited prose last.
DOMAINS = (
    ("tweets", "tweets_GroundTruth.txt"),
    ("movies", "movieReviewSnippets_GroundTruth.txt"),
    ("products", "amazonReviewSnippets_GroundTruth.txt"),
    ("editorials", "nytEditorialSnippets_GroundTruth.txt"),
)
LABELS = ("negative", "neutral", "positive")
# A mean rating within +-NEUTRAL_BAND is "neutral". 0.5 on the -4..+4 scale is an eighth of the way to
# "extremely" positive or negative; it leaves every domain a neutral class of 560+ sentences.
NEUTRAL_BAND = 0.5


def label_of(rating: float) -> str:
    if rating < -NEUTRAL_BAND:
        return "negative"
    if rating > NEUTRAL_BAND:
        return "positive"
    return "neutral"


def read_domains(sdist: Path) -> dict[str, list[tuple[str, float]]]:
    """task -> (text, mean rating) in file order, from the source distribution's nested archive."""
    with tarfile.open(sdist, "r:gz") as outer:
        member = next(m for m in outer.getmembers() if m.name.endswith(INNER_ARCHIVE))
        handle = outer.extractfile(member)
        if handle is None:
            raise SystemExit(f"{member.name} in {sdist} is not a file")
        inner_bytes = handle.read()
    rows: dict[str, list[tuple[str, float]]] = {}
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        for task, filename in DOMAINS:
            member = next(m for m in inner.getmembers() if m.name.endswith("/" + filename))
            handle = inner.extractfile(member)
            if handle is None:
                raise SystemExit(f"{member.name} is not a file")
            rows[task] = [
                parse(line, filename, n)
                for n, line in enumerate(handle.read().decode("utf-8").splitlines(), 1)
                if line.strip()
            ]
    return rows


def parse(line: str, filename: str, n: int) -> tuple[str, float]:
    parts = line.split("\t")
    if len(parts) != 3:
        raise SystemExit(f"{filename}:{n}: expected ID, rating and text separated by tabs")
    # The sources keep HTML entities, some escaped twice (&amp;amp;): unescape until nothing changes.
    # Whitespace runs are collapsed so equal sentences compare equal.
    text, previous = parts[2], ""
    while text != previous:
        text, previous = html.unescape(text), text
    return " ".join(text.split()), float(parts[1])


def by_label(rows: list[tuple[str, float]]) -> tuple[dict[str, list[str]], int]:
    """label -> unique texts (sorted); a text rated into two labels (repeated snippets) is dropped."""
    owners: dict[str, set[str]] = defaultdict(set)
    for text, rating in rows:
        if text:
            owners[text].add(label_of(rating))
    groups: dict[str, list[str]] = {label: [] for label in LABELS}
    ambiguous = 0
    for text in sorted(owners):
        labels = owners[text]
        if len(labels) > 1:
            ambiguous += 1
            continue
        groups[next(iter(labels))].append(text)
    return groups, ambiguous


def split_group(
    texts: list[str], *, max_train: int, max_test: int, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    order = rng.permutation(len(texts))
    shuffled = [texts[i] for i in order]
    if len(texts) >= max_train + max_test:
        return shuffled[max_test : max_test + max_train], shuffled[:max_test]
    n_test = round(len(texts) * max_test / (max_train + max_test))  # a small group keeps the same ratio
    return shuffled[n_test:], shuffled[:n_test]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", type=Path, required=True, help="vaderSentiment-3.3.2.tar.gz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--max-train", type=int, default=400, help="per task and label")
    parser.add_argument("--max-test", type=int, default=100, help="per task and label")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    domains = read_domains(args.sdist)
    # A sentence found in two domains (none in 3.3.2, checked here) would sit in two tasks' splits.
    seen: dict[str, str] = {}
    for task, rows in domains.items():
        for text, _ in rows:
            if seen.setdefault(text, task) != task:
                raise SystemExit(f"a sentence occurs in tasks {seen[text]!r} and {task!r}: {text[:60]!r}")
    rng = np.random.default_rng(args.seed)
    out_rows: list[dict[str, str]] = []
    for task, _ in DOMAINS:
        groups, ambiguous = by_label(domains[task])
        for label in LABELS:
            train, test = split_group(
                groups[label], max_train=args.max_train, max_test=args.max_test, rng=rng
            )
            print(
                f"{task:11s} {label:9s} n={len(groups[label]):5d} train={len(train):4d} test={len(test):4d}"
            )
            out_rows += [{"text": t, "label": label, "task": task, "split": "train"} for t in train]
            out_rows += [{"text": t, "label": label, "task": task, "split": "test"} for t in test]
        print(f"{task:11s} sentences dropped as rated into two labels: {ambiguous}")

    payload = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in out_rows).encode("utf-8")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 and no embedded file name keep the archive byte-identical across regenerations.
    with open(args.out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(payload)
    n_train = sum(row["split"] == "train" for row in out_rows)
    print(f"train: {n_train}, test: {len(out_rows) - n_train}")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
