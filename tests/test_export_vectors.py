"""An export that carries vectors reads back: ``export --with-vectors`` then ``ingest --vector-field`` copies
an embedding-only memory (which has no texts to embed again), and a file whose vectors are not the
memory's is refused before anything is made."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from rehearsal.cli.main import KEY_ENV, main
from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory

TEXTS = [
    "the invoice was charged twice",
    "my parcel never arrived",
    "how do I reset my password",
    "the app crashes when I open settings",
    "please close my account",
]


def _rows(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("rehearsal: error:")
    return err[0]


@pytest.fixture
def exported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    """An embedding-only memory of TEXTS (sources doc-0..doc-4, two tenants) and its export with vectors."""
    data = _rows(
        tmp_path / "in.jsonl",
        [
            {"text": t, "label": i % 2, "task": "support", "ref": f"doc-{i}", "owner": f"t{i % 2}"}
            for i, t in enumerate(TEXTS)
        ],
    )
    memory = tmp_path / "original"
    argv = ["ingest", str(memory), str(data), "--embedding-only", "--source-field", "ref"]
    assert main([*argv, "--tenant-field", "owner", "--quiet"]) == 0
    out = tmp_path / "export.jsonl"
    assert main(["export", str(memory), "--out", str(out), "--with-vectors"]) == 0
    capsys.readouterr()
    return memory, out


def test_an_embedding_only_memory_is_copied_through_its_export(
    tmp_path: Path, exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    original, out = exported
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # vectors can be inverted into text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(len(r["vector"]) == 384 and "text" not in r for r in rows)
    copy = tmp_path / "copy"
    argv = ["ingest", str(copy), str(out), "--embedding-only", "--source-field", "source"]
    assert main([*argv, "--tenant-field", "tenant", "--vector-field", "vector", "--quiet"]) == 0
    with RehearsalMemory.open(original, read_only=True) as a, RehearsalMemory.open(copy, read_only=True) as b:
        assert len(a) == len(b) == len(TEXTS)
        by_source_a = {r.source: (r.tenant, r.label, v) for i, r in a.entries(a.ids()).items()
                       for v in [a.vectors_by_id([i])[i]]}  # fmt: skip
        by_source_b = {r.source: (r.tenant, r.label, v) for i, r in b.entries(b.ids()).items()
                       for v in [b.vectors_by_id([i])[i]]}  # fmt: skip
        assert set(by_source_a) == set(by_source_b) == {f"doc-{i}" for i in range(len(TEXTS))}
        for source, (tenant, label, vector) in by_source_a.items():
            assert by_source_b[source][:2] == (tenant, label)
            np.testing.assert_allclose(by_source_b[source][2], vector, atol=2e-3)  # float16 at rest
        query = a.vectors_by_id([a.ids()[0]])
        first = next(iter(query.values()))[None, :]
        hits_a = [a.entries([h.id])[h.id].source for h in a.search_vectors(first, k=3)[0]]
        hits_b = [b.entries([h.id])[h.id].source for h in b.search_vectors(first, k=3)[0]]
        assert hits_a == hits_b


def test_vectors_that_are_not_the_memorys_are_refused_before_anything_is_made(
    tmp_path: Path, exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = exported
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    base = ["--embedding-only", "--source-field", "source", "--vector-field", "vector", "--quiet"]

    other = _rows(tmp_path / "other.jsonl", [{**r, "vector_encoder": "someone-elses-model"} for r in rows])
    assert main(["ingest", str(tmp_path / "a"), str(other), *base]) != 0
    assert "someone-elses-model" in _one_line_error(capsys)
    assert not (tmp_path / "a").exists()

    short = _rows(tmp_path / "short.jsonl", [{**r, "vector": r["vector"][:100]} for r in rows])
    assert main(["ingest", str(tmp_path / "b"), str(short), *base]) != 0
    assert "100 numbers" in _one_line_error(capsys)
    assert not (tmp_path / "b").exists()

    ragged = _rows(tmp_path / "ragged.jsonl", [rows[0], {**rows[1], "vector": rows[1]["vector"][:5]}])
    assert main(["ingest", str(tmp_path / "c"), str(ragged), *base]) != 0
    assert "line 2" in _one_line_error(capsys)

    bad = _rows(tmp_path / "bad.jsonl", [{**rows[0], "vector": ["x"] * 384}])
    assert main(["ingest", str(tmp_path / "d"), str(bad), *base]) != 0
    assert "not a finite number" in _one_line_error(capsys)


def test_a_memory_that_stores_text_refuses_rows_without_text(
    tmp_path: Path,
    exported: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out = exported
    monkeypatch.setenv(KEY_ENV, KeyRing.generate().export_base64())
    assert main(["ingest", str(tmp_path / "enc"), str(out), "--vector-field", "vector", "--quiet"]) != 0
    assert "stores text" in _one_line_error(capsys)
    assert not (tmp_path / "enc").exists()
