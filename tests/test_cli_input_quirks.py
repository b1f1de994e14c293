"""Input the CLI must refuse in its own words (or read correctly): encodings, CSV quirks, option values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rehearsal import ConfigError, KeyRing, RunConfig
from rehearsal.cli.main import KEY_ENV, main


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KeyRing.generate().export_base64())


def _ingest(capsys: pytest.CaptureFixture[str], mem: Path, data: Path, *extra: str) -> tuple[int, str]:
    status = main(["ingest", str(mem), str(data), "--quiet", *extra])
    out, err = capsys.readouterr()
    return status, out + err


def _error(said: str) -> str:
    lines = said.splitlines()
    assert len(lines) == 1, said  # one line, no traceback
    assert lines[0].startswith("rehearsal: error: ")
    return lines[0]


def test_a_jsonl_file_that_is_not_utf8_names_its_line(
    tmp_path: Path, key: None, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    status, said = _ingest(capsys, tmp_path / "mem", data)
    assert status == 1
    assert "data.jsonl line 2: not UTF-8" in _error(said)
    assert not (tmp_path / "mem").exists()


def test_a_csv_file_that_is_not_utf8_names_its_line(
    tmp_path: Path, key: None, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(b"text,label\nfine,1\nna\xefve,2\n")
    status, said = _ingest(capsys, tmp_path / "mem", data)
    assert status == 1
    assert "data.csv line 3: not UTF-8" in _error(said)


def test_a_lone_surrogate_in_a_text_names_its_line(
    tmp_path: Path, key: None, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "fine"}\n{"text": "broken \\ud800 text"}\n')
    status, said = _ingest(capsys, tmp_path / "mem", data)
    assert status == 1
    assert "data.jsonl line 2: is not valid Unicode text" in _error(said)


def test_an_unterminated_csv_quote_is_refused_not_merged(
    tmp_path: Path, key: None, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.csv"
    data.write_text('text,label\nfirst,1\n"second,2\nthird,3\nfourth,4\n')
    status, said = _ingest(capsys, tmp_path / "mem", data)
    assert status == 1
    assert "data.csv row 2 (from line 3): malformed CSV" in _error(said)
    assert not (tmp_path / "mem").exists()


def test_an_over_long_tenant_is_refused_before_the_memory_is_made(
    tmp_path: Path, key: None, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "fine"}\n')
    status, said = _ingest(capsys, tmp_path / "mem", data, "--tenant", "t" * 65)
    assert status == 1
    assert "invalid tenant name" in _error(said)
    assert not (tmp_path / "mem").exists()


@pytest.mark.parametrize("ids", ["1,,2", "1,2,", ",1"])
def test_delete_refuses_an_id_list_with_an_empty_item(
    tmp_path: Path, ids: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["delete", str(tmp_path / "mem"), "--ids", ids]) == 2
    assert "integer ids" in _error(capsys.readouterr().err)


def test_a_csv_header_with_a_byte_order_mark_is_read(
    tmp_path: Path, key: None, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes("\ufefftext,label\na small bird,1\na tall tree,2\n".encode())
    status, said = _ingest(capsys, tmp_path / "mem", data, "--json")
    assert status == 0, said
    report = json.loads(said)
    assert (report["added"], report["distinct_labels"]) == (2, 2)


@pytest.mark.parametrize("value", [5, None, ["runs"], ""])
def test_a_run_config_output_dir_must_be_a_path_string(value: object) -> None:
    with pytest.raises(ConfigError, match="'output_dir' must be a non-empty path string"):
        RunConfig(output_dir=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("abbreviated", ["--k", "--key", "--with"])
def test_an_abbreviated_option_is_refused_not_read_as_another(
    abbreviated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], key: None
) -> None:
    """``--k 2`` once read as ``--key-file 2``: a later ``--key-file`` won, and k silently stayed 5."""
    status = main(["search", str(tmp_path / "mem"), "a query", abbreviated, "2"])
    out, err = capsys.readouterr()
    assert status == 2
    assert f"unrecognized arguments: {abbreviated}" in _error(out + err)
