"""The ``rehearsal`` CLI, run in-process through ``main(argv)`` (plus two real processes for exit codes)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rehearsal.cli.main import KEY_ENV, VERBS, main
from rehearsal.crypto.keys import KeyRing
from rehearsal.runner.tasks import Example, load_wordnet_stream


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    """Real glosses: three of each class of two WordNet tasks."""
    stream = load_wordnet_stream(max_train_per_class=3)
    by_task = {task.name: task.train for task in stream.tasks}
    return [*by_task["living"], *by_task["verbs"][:12]]


@pytest.fixture(scope="module")
def module_key() -> str:
    return KeyRing.generate().export_base64()


@pytest.fixture
def key(module_key: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The module's master key, exported in the environment the CLI reads."""
    monkeypatch.setenv(KEY_ENV, module_key)
    return module_key


def rows(examples: list[Example]) -> list[dict[str, Any]]:
    return [{"text": ex.text, "task": ex.task, "label": ex.label, "note": i} for i, ex in enumerate(examples)]


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    status, out, err = run(capsys, *argv, "--json")
    assert status == 0, err
    return json.loads(out)


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rehearsal: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def memory_template(
    tmp_path_factory: pytest.TempPathFactory, module_key: str, examples: list[Example]
) -> Path:
    folder = tmp_path_factory.mktemp("template")
    data = write_jsonl(folder / "data.jsonl", rows(examples))
    path = folder / "mem"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, module_key)
        argv = ["ingest", str(path), str(data), "--metadata-fields", "task,label,note", "--tenant", "acme"]
        assert main([*argv, "--quiet"]) == 0
    return path


@pytest.fixture
def memory(tmp_path: Path, key: str, memory_template: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """An encrypted memory (a copy, for this test) holding ``examples`` with task, label and note metadata,
    tenant 'acme'."""
    capsys.readouterr()  # the template's ingest report
    path = tmp_path / "mem"
    shutil.copytree(memory_template, path)
    return str(path)


# -- keygen and init ----------------------------------------------------------------------------------


def test_keygen_writes_an_owner_only_key_file_that_opens_a_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "master.key"
    report = run_json(capsys, "keygen", "--out", str(key_file))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert report["fingerprint"] == KeyRing.from_file(key_file).fingerprint
    assert "key" not in report
    created = run_json(capsys, "init", str(tmp_path / "mem"), "--key-file", str(key_file))
    assert created["mode"] == "encrypted"


def test_keygen_never_overwrites_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "master.key"
    key_file.write_text("precious")
    status, _, err = run(capsys, "keygen", "--out", str(key_file))
    assert status == 1
    assert "never overwritten" in one_error_line(err)
    assert key_file.read_text() == "precious"


def test_keygen_prints_a_valid_key_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "keygen")
    assert status == 0
    assert len(KeyRing.from_base64(out.strip()).fingerprint) == 16


def test_init_without_a_key_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    status, out, err = run(capsys, "init", str(tmp_path / "mem"))
    assert (status, out) == (1, "")
    assert KEY_ENV in one_error_line(err)
    assert not (tmp_path / "mem").exists()


def test_init_embedding_only_needs_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    report = run_json(capsys, "init", str(tmp_path / "mem"), "--embedding-only")
    assert (report["mode"], report["encrypted"], report["dim"]) == ("embedding-only", False, 384)


# -- ingest -------------------------------------------------------------------------------------------


def test_ingest_jsonl_creates_the_memory_and_reports_the_ids(
    tmp_path: Path, key: str, examples: list[Example], capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", rows(examples))
    path = str(tmp_path / "mem")
    report = run_json(
        capsys, "ingest", path, str(data), "--metadata-fields", "task,label", "--batch-size", "7"
    )
    assert report["created"] is True
    assert (report["added"], report["entries"]) == (len(examples), len(examples))
    assert (report["first_id"], report["last_id"]) == (0, len(examples) - 1)
    again = run_json(capsys, "ingest", path, str(data))
    assert again["created"] is False
    assert again["entries"] == 2 * len(examples)


def test_ingest_csv_keeps_filterable_and_extra_metadata(
    tmp_path: Path, key: str, examples: list[Example], capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.csv"
    with data.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["body", "task", "tags", "origin"])
        writer.writeheader()
        for ex in examples:
            writer.writerow({"body": ex.text, "task": ex.task, "tags": "wordnet, gloss", "origin": "wn3"})
    path = str(tmp_path / "mem")
    fields = "task,tags,origin"
    run_json(capsys, "ingest", path, str(data), "--text-field", "body", "--metadata-fields", fields)
    hits = run_json(capsys, "search", path, examples[0].text, "-k", "1", "--where", '{"tags": "gloss"}')
    top = hits["results"][0]["hits"][0]
    assert top["metadata"]["origin"] == "wn3"
    assert top["metadata"]["tags"] == ["wordnet", "gloss"]
    assert top["metadata"]["task"] == "living"


def test_ingest_reads_a_saved_dataset_folder(
    tmp_path: Path, key: str, examples: list[Example], capsys: pytest.CaptureFixture[str]
) -> None:
    import datasets

    folder = tmp_path / "ds"
    datasets.Dataset.from_list(rows(examples)).save_to_disk(str(folder))
    path = str(tmp_path / "mem")
    report = run_json(capsys, "ingest", path, str(folder), "--metadata-fields", "task,label")
    assert report["added"] == len(examples)
    stats = run_json(capsys, "stats", path)
    assert stats["tasks"] == {"living": 15, "verbs": 12}


def test_ingest_of_a_dataset_dict_needs_a_split(
    tmp_path: Path, key: str, examples: list[Example], capsys: pytest.CaptureFixture[str]
) -> None:
    import datasets

    folder = tmp_path / "dd"
    split = datasets.Dataset.from_list(rows(examples[:3]))
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(folder))
    capsys.readouterr()  # save_to_disk's progress bars
    status, _, err = run(capsys, "ingest", str(tmp_path / "mem"), str(folder))
    assert status == 1
    assert "['test', 'train']: choose one with --split" in one_error_line(err)
    report = run_json(capsys, "ingest", str(tmp_path / "mem"), str(folder), "--split", "test")
    assert report["added"] == 3


def test_ingest_rejects_a_bad_record_before_adding_any(
    tmp_path: Path, key: str, examples: list[Example], capsys: pytest.CaptureFixture[str]
) -> None:
    items = rows(examples)
    items[2] = {"task": "living"}  # no text; on line 3
    data = write_jsonl(tmp_path / "data.jsonl", items)
    status, out, err = run(capsys, "ingest", str(tmp_path / "mem"), str(data))
    assert (status, out) == (1, "")
    assert "data.jsonl line 3" in one_error_line(err)
    assert not (tmp_path / "mem").exists()


def test_ingest_names_a_metadata_field_no_record_has(
    tmp_path: Path, key: str, examples: list[Example], capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", rows(examples))
    status, _, err = run(
        capsys, "ingest", str(tmp_path / "mem"), str(data), "--metadata-fields", "task,lable"
    )
    assert status == 1
    assert "'lable'" in one_error_line(err)


def test_ingest_embedding_only_keeps_sources_and_no_text(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    examples: list[Example],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    items = [{**item, "ref": f"doc-{i}"} for i, item in enumerate(rows(examples))]
    data = write_jsonl(tmp_path / "data.jsonl", items)
    path = str(tmp_path / "mem")
    run_json(capsys, "ingest", path, str(data), "--embedding-only", "--source-field", "ref")
    hits = run_json(capsys, "search", path, examples[4].text, "-k", "1")
    assert hits["results"][0]["hits"][0]["metadata"]["source"] == "doc-4"
    status, _, err = run(capsys, "search", path, "anything", "--with-text")
    assert status == 1
    assert "embedding-only" in one_error_line(err)


def test_an_unencrypted_memory_ignores_the_ambient_key_but_refuses_a_key_file(
    tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "mem")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(KEY_ENV)
        run_json(capsys, "init", path, "--embedding-only")
    assert run_json(capsys, "stats", path)["encrypted"] is False  # REHEARSAL_MASTER_KEY is set, unused
    key_file = tmp_path / "k"
    run_json(capsys, "keygen", "--out", str(key_file))
    for argv in (
        ("stats", path, "--key-file", str(key_file)),
        ("rotate-key", path, "--new-key-file", str(key_file)),
    ):
        status, _, err = run(capsys, *argv)
        assert status == 1
        assert "is not encrypted" in one_error_line(err)


# -- search -------------------------------------------------------------------------------------------


def test_search_where_keeps_only_matching_hits(
    memory: str, examples: list[Example], capsys: pytest.CaptureFixture[str]
) -> None:
    # A verb-like query would rank verb glosses first; the filter must still hold.
    report = run_json(capsys, "search", memory, "move quickly", "-k", "5", "--where", '{"task": "living"}')
    hits = report["results"][0]["hits"]
    assert len(hits) == 5
    assert {hit["metadata"]["task"] for hit in hits} == {"living"}
    assert [hit["score"] for hit in hits] == sorted((hit["score"] for hit in hits), reverse=True)


def test_search_finds_an_exact_text_first_and_shows_its_text(
    memory: str, examples: list[Example], capsys: pytest.CaptureFixture[str]
) -> None:
    target = examples[20]
    report = run_json(capsys, "search", memory, target.text, "other query", "-k", "3", "--with-text")
    assert [r["query"] for r in report["results"]] == [target.text, "other query"]
    top = report["results"][0]["hits"][0]
    assert (top["text"], top["metadata"]["label"], top["metadata"]["note"]) == (target.text, target.label, 20)
    status, out, _ = run(capsys, "search", memory, target.text, "-k", "1", "--with-text")
    assert status == 0
    assert target.text in out


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("{task: living}", "not valid JSON"),
        ('["task"]', "must be a JSON object"),
        ('{"colour": "red"}', "unknown filter field 'colour'"),
        ('{"task": {"$near": 1}}', "unknown operator"),
    ],
)
def test_search_rejects_a_bad_where(
    memory: str, where: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "search", memory, "query", "--where", where)
    assert (status, out) == (1, "")
    assert message in one_error_line(err)


# -- stats, verify, delete, forget --------------------------------------------------------------------


def test_stats_and_verify_report_the_entries(
    memory: str, examples: list[Example], capsys: pytest.CaptureFixture[str]
) -> None:
    stats = run_json(capsys, "stats", memory)
    assert (stats["entries"], stats["encrypted"], stats["tenants"]) == (len(examples), True, {"acme": 27})
    verified = run_json(capsys, "verify", memory)
    assert verified["ok"] is True
    assert verified["entries"] == verified["texts"] == verified["vectors"] == len(examples)
    status, out, _ = run(capsys, "verify", memory)
    assert status == 0
    assert out.startswith("ok: 27 entries")


def test_delete_removes_the_ids_and_refuses_unknown_ones(
    memory: str, capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_json(capsys, "delete", memory, "--ids", "0,1,2")
    assert (report["deleted"], report["entries"]) == (3, 24)
    hits = run_json(capsys, "search", memory, "bird", "-k", "30")["results"][0]["hits"]
    assert not {0, 1, 2} & {hit["id"] for hit in hits}
    status, _, err = run(capsys, "delete", memory, "--ids", "1")
    assert status == 1
    assert "no entries with ids [1]" in one_error_line(err)


def test_forget_erases_one_tenant_only(
    memory: str, tmp_path: Path, examples: list[Example], capsys: pytest.CaptureFixture[str]
) -> None:
    other = write_jsonl(tmp_path / "other.jsonl", rows(examples[:4]))
    run_json(capsys, "ingest", memory, str(other), "--tenant", "globex")
    report = run_json(capsys, "forget", memory, "--tenant", "acme")
    assert (report["removed"], report["entries"]) == (27, 4)
    assert run_json(capsys, "stats", memory)["tenants"] == {"globex": 4}
    assert run_json(capsys, "verify", memory)["ok"] is True
    # Erasure pipelines retry: the tenant is gone, which is what the retry asks for.
    again = run_json(capsys, "forget", memory, "--tenant", "acme")
    assert (again["removed"], again["already_absent"], again["entries"]) == (0, True, 4)


# -- keys ---------------------------------------------------------------------------------------------


def test_rotate_key_then_only_the_new_key_opens_the_memory(
    memory: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    new_key = KeyRing.generate()
    monkeypatch.setenv("NEW_KEY", new_key.export_base64())
    report = run_json(capsys, "rotate-key", memory, "--new-key-env", "NEW_KEY")
    assert report["new_fingerprint"] == new_key.fingerprint
    status, _, err = run(capsys, "verify", memory)
    assert status == 1
    assert "does not open" in one_error_line(err)
    key_file = tmp_path / "new.key"
    key_file.write_text(new_key.export_base64())
    key_file.chmod(0o600)
    assert run_json(capsys, "verify", memory, "--key-file", str(key_file))["ok"] is True


def test_rotate_key_to_the_same_key_is_refused(
    memory: str, key: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAME_KEY", key)
    status, _, err = run(capsys, "rotate-key", memory, "--new-key-env", "SAME_KEY")
    assert status == 1
    assert "already uses" in one_error_line(err)


def test_a_missing_key_is_a_one_line_error_naming_the_remedy(
    memory: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(KEY_ENV)
    status, out, err = run(capsys, "stats", memory)
    assert (status, out) == (1, "")
    assert "--key-file" in one_error_line(err)


def test_a_group_readable_key_file_is_refused(
    memory: str, tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "loose.key"
    key_file.write_text(key)
    key_file.chmod(0o644)
    status, out, err = run(capsys, "stats", memory, "--key-file", str(key_file))
    assert status == 1
    assert "chmod 600" in one_error_line(err)
    assert key not in out + err


def test_key_material_never_reaches_the_output(
    memory: str, key: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = []
    for argv in (
        ("stats", memory),
        ("verify", memory),
        ("search", memory, "bird", "--with-text"),
        ("delete", memory, "--ids", "5"),
        ("search", memory, "bird", "--where", "{bad"),
    ):
        for extra in ((), ("--json",)):
            seen.append(run(capsys, *argv, *extra))
    wrong = KeyRing.generate().export_base64()
    monkeypatch.setenv(KEY_ENV, wrong)  # the error names fingerprints, never keys
    seen.append(run(capsys, "verify", memory))
    assert seen[-1][0] == 1
    for _, out, err in seen:
        assert key not in out + err
        assert wrong not in out + err


# -- usage and processes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("frobnicate",),
        ("delete", "mem", "--ids", "1,x"),
        ("search", "mem", "query", "-k", "0"),
        ("rotate-key", "mem"),
        ("stats",),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, *argv)
    assert (status, out) == (2, "")
    one_error_line(err)


def test_every_verb_takes_json() -> None:
    # A new verb (run, bench) gets --json from the parser, not from its author's memory.
    from rehearsal.cli.main import build_parser

    parser = build_parser()
    for name in VERBS:
        argv = [name] if name in ("keygen", "gate") else [name, "PATH"]  # compare: PATH is its CONFIG
        required = {
            "delete": ["--ids", "1"],
            "forget": ["--tenant", "t"],
            "rotate-key": ["--new-key-env", "V"],
            "gate": ["--baseline", "b.json", "--candidate", "c.json"],
            "approve": ["--approver", "a"],
            "get": ["--ids", "1"],
            "export": ["--out", "x.jsonl"],
            "compare": ["--methods", "naive"],
            "init-deployment": ["--memory", "m"],
            "update": ["--data", "d.jsonl"],
            "shadow": ["--requests", "r.jsonl"],
            "predict": ["--data", "r.jsonl"],
        }
        extra = {"ingest": ["FILE"], "search": ["q"]}
        args = parser.parse_args([*argv, *extra.get(name, []), *required.get(name, []), "--json"])
        assert args.json is True


def test_a_real_process_exits_1_on_a_wrong_key_and_2_on_bad_usage(memory: str) -> None:
    env = {**os.environ, KEY_ENV: KeyRing.generate().export_base64()}
    wrong = subprocess.run(
        [sys.executable, "-m", "rehearsal.cli", "verify", memory], capture_output=True, text=True, env=env
    )
    assert (wrong.returncode, wrong.stdout) == (1, "")
    assert "Traceback" not in wrong.stderr
    assert "does not open this vault" in one_error_line(wrong.stderr)
    usage = subprocess.run(
        [sys.executable, "-m", "rehearsal.cli", "delete", memory], capture_output=True, text=True, env=env
    )
    assert usage.returncode == 2
    assert "--ids" in one_error_line(usage.stderr)


def test_bench_reports_recall_and_speed_against_exact_search(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rehearsal.memory.facade import RehearsalMemory

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    path = tmp_path / "vec"
    with RehearsalMemory.create(path, embedding_only=True, dim=16) as memory:
        memory.add(vectors=vectors, sources=[f"s{i}" for i in range(300)])
    assert main(["bench", str(path), "--queries", "50", "-k", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["entries"], report["queries"], report["k"]) == (300, 50, 5)
    assert report["recall_at_k"] == 1.0  # a flat index is exact
    assert report["index"].endswith("Flat")
    assert report["speedup_vs_exact"] > 0
    with RehearsalMemory.create(tmp_path / "empty", embedding_only=True, dim=16):
        pass
    assert main(["bench", str(tmp_path / "empty")]) == 1
    assert "empty" in capsys.readouterr().err
