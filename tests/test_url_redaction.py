"""No verb prints a server URL's password, wherever the URL carries it (issue 28), and a malformed URL or
a damaged server manifest is our one-line error, not a ValueError traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from rehearsal.cli.main import KEY_ENV, main
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import ConfigError
from rehearsal.store.registry import server_location_without_password
from rehearsal.store.urls import redact, redact_text, redact_url, split_secret


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cret@db.example:5432/mem", "postgresql://u@db.example:5432/mem"),
        ("postgresql://u@db/mem?password=s3cret&schema=x", "postgresql://u@db/mem?schema=x"),
        ("postgresql://u@db/mem?schema=x&PASSWORD=s3cret", "postgresql://u@db/mem?schema=x"),
        ("postgresql://u@db/mem?sslpassword=s3cret", "postgresql://u@db/mem"),
        ("postgresql://:s3cret@db/mem", "postgresql://db/mem"),
        ("postgresql://u:s3cret@db:99999/mem", "postgresql://u@db:99999/mem"),  # a bad port
        ("postgresql://u:s3cret@[::1/mem?password=s3cret", "postgresql://u@[::1/mem"),  # unclosed [
        ("milvus://u:s3cret@host:19530", "milvus://u@host:19530"),
        ("/a/folder/with:colon@sign", "/a/folder/with:colon@sign"),  # not a URL: unchanged
    ],
)
def test_redact_url_removes_every_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_text(f"cannot open {url!r}: refused")
    assert redact({"path": url, "more": [url]}) == {"path": shown, "more": [shown]}


def test_split_secret_returns_the_password_for_the_connection() -> None:
    assert split_secret("postgresql://u:a%40b@db/m") == ("postgresql://u@db/m", "a@b")
    assert split_secret("postgresql://u:one@db/m?password=two") == ("postgresql://u@db/m", "two")
    assert split_secret("postgresql://u@db/m") == ("postgresql://u@db/m", None)


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("postgresql://u:s3cret@db/mem?schema=x", "postgresql://u@db/mem?schema=x"),
        ("postgresql://u@db/mem?password=s3cret&schema=x", "postgresql://u@db/mem?schema=x"),
    ],
)
def test_a_server_password_moves_where_libpq_reads_it(
    url: str, kept: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    assert server_location_without_password(url) == kept
    assert os.environ.get("PGPASSWORD") == "s3cret"


def test_a_server_url_without_a_password_leaves_pgpassword_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-the-shell")
    assert server_location_without_password("postgresql://u@db/mem") == "postgresql://u@db/mem"
    assert os.environ["PGPASSWORD"] == "from-the-shell"


def test_a_malformed_server_url_keeps_its_password_out_of_the_error_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(ConfigError, match="malformed PostgreSQL URL") as info:
        server_location_without_password("postgresql://u:s3cret@db:99999/mem")
    assert "s3cret" not in str(info.value)
    assert "PGPASSWORD" not in os.environ


@pytest.mark.parametrize("verb", ["stats", "search", "ingest", "verify"])
@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("postgresql://u:s3cret@127.0.0.1:99999/db", "malformed PostgreSQL URL"),
        ("postgresql://u:s3cret@127.0.0.1:port/db", "malformed PostgreSQL URL"),
        ("postgresql://u@[::1/db?password=s3cret", "malformed PostgreSQL URL"),
    ],
    ids=["port-out-of-range", "port-not-a-number", "unclosed-bracket"],
)
def test_a_malformed_url_is_one_line_of_our_error_without_the_password(
    verb: str, url: str, match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {"search": ["a query"], "ingest": [str(tmp_path / "none.jsonl")]}.get(verb, [])
    assert main([verb, url, *extra, "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert match in err
    assert "s3cret" not in err
    assert len(err.strip().splitlines()) == 1


def _query_password(url: str) -> tuple[str, str]:
    """The server URL with its password moved from the user-info into the query, and the password."""
    password = psycopg.conninfo.conninfo_to_dict(url)["password"]
    assert isinstance(password, str)
    return url.replace(f":{password}@", "@", 1) + f"?password={password}", password


def test_no_verb_echoes_a_password_given_in_the_query(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(KEY_ENV, KeyRing.generate().export_base64())
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url, password = _query_password(postgres_url)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": f"note {w}"}) + "\n" for w in ("cat", "dog", "fox")))
    outputs = []
    for argv in (["ingest", url, str(data)], ["search", url, "a dog", "-k", "1"], ["stats", url]):
        for as_json in (["--json"], []):
            assert main([*argv, *as_json]) == 0
            outputs.append(capsys.readouterr())
    assert (
        json.loads(outputs[0].out)["path"].endswith("?schema=rehearsal") or "password" not in outputs[0].out
    )
    for out, err in outputs:
        assert password not in out
        assert password not in err
    assert os.environ.get("PGPASSWORD") == password  # moved where libpq reads it
    # An error on the same URL names it without the password too.
    assert main(["get", url, "--ids", "999", "--json"]) == 1
    assert password not in capsys.readouterr().err


def test_a_non_integer_format_in_mem_meta_is_our_error(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(KEY_ENV, KeyRing.generate().export_base64())
    monkeypatch.delenv("PGPASSWORD", raising=False)
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"text": "one note"}) + "\n")
    assert main(["ingest", postgres_url, str(data), "--quiet"]) == 0
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE rehearsal.mem_meta SET value = 'two' WHERE key = 'format'")
    capsys.readouterr()
    assert main(["stats", postgres_url]) == 1
    err = capsys.readouterr().err
    assert "its format is not a number" in err
    assert "Traceback" not in err
