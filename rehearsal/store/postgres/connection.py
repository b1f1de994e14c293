"""Where PostgreSQL meets the library: locations, connections, transactions, and psycopg's errors as ours.

A memory on a server is named by a libpq URL, ``postgresql://user:password@host:port/database``, with one
option of ours, ``schema=NAME`` (default ``rehearsal``): the schema that holds the memory's tables, so one
database can hold several memories. Every connection sets ``search_path`` to that schema (then ``public``,
where the ``vector`` type lives).

Writers serialise on one row (``mem_meta`` 'generation', locked FOR UPDATE at the start of every write
transaction): generations then follow commit order across processes and nodes, as they do in SQLite
under ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import functools
import os
import re
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from rehearsal.errors import ConfigError, IntegrityError, RehearsalError, StorageError, StoreFormatError
from rehearsal.store.urls import redact_url, split_secret

__all__ = [
    "SCHEMES",
    "Location",
    "ServerConnection",
    "connect",
    "move_password_to_environment",
    "parse_location",
    "server_errors",
]

SCHEMES = ("postgresql", "postgres")
PASSWORD_ENV = "PGPASSWORD"  # where libpq looks for the password a URL does not carry
DEFAULT_SCHEMA = "rehearsal"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Location:
    """A parsed server location: the URL libpq is given (our options removed) and the memory's schema."""

    conninfo: str
    schema: str

    def display(self) -> str:
        """The location without its password, for messages and reprs."""
        parts = urllib.parse.urlsplit(self.conninfo)
        host = parts.hostname or ""
        netloc = f"{parts.username}@{host}" if parts.username else host
        if parts.port:
            netloc += f":{parts.port}"
        return f"{parts.scheme}://{netloc}{parts.path}?schema={self.schema}"


def parse_location(location: str) -> Location:
    """Split a ``postgresql://`` URL into libpq's part and our ``schema`` option; ConfigError if malformed
    (its message shows the URL redacted)."""
    try:
        parts = urllib.parse.urlsplit(location)
        parts.port  # noqa: B018 -- parsed now: a bad port would otherwise raise wherever it is read
    except ValueError as exc:
        raise ConfigError(f"malformed PostgreSQL URL {redact_url(location)!r}: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise ConfigError(f"not a PostgreSQL URL (postgresql://...): scheme {parts.scheme!r}")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    schema = schemas[-1] if schemas else DEFAULT_SCHEMA
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigError(f"schema must be a lower-case SQL name (letters, digits, _), got {schema!r}")
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
    conninfo = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, rest, ""))
    return Location(conninfo, schema)


def move_password_to_environment(location: str) -> str:
    """``location`` with its password (``user:PASSWORD@`` or ``?password=``) moved into libpq's
    ``PGPASSWORD`` (for this process), so that the reports and messages that echo the location never print
    it; ConfigError (the URL redacted) for one libpq would not parse either (a bad port, an unclosed
    ``[``)."""
    stripped, secret = split_secret(location, frozenset({"password"}))
    parse_location(stripped).display()  # ConfigError now, not a ValueError from deep inside a caller
    if secret is not None:
        os.environ[PASSWORD_ENV] = secret
    return stripped


def _describe(exc: BaseException) -> str:
    # psycopg's messages name the server, the statement's failure and sometimes a DETAIL line quoting key
    # values (ids, tenant names); keep the first line, which names no stored value.
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@contextmanager
def server_errors(doing: str) -> Iterator[None]:
    """Re-raise psycopg's errors inside the block as ours; ``doing`` says what failed."""
    import psycopg

    try:
        yield
    except RehearsalError:
        raise
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StorageError(f"{doing} failed: the server refused the privilege ({_describe(exc)})") from exc
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        raise StorageError(f"{doing} failed: the connection is read-only ({_describe(exc)})") from exc
    except psycopg.errors.DataCorrupted as exc:
        raise IntegrityError(f"{doing} failed: the server reports damaged data ({_describe(exc)})") from exc
    except psycopg.errors.UndefinedTable as exc:
        raise StoreFormatError(
            f"{doing} failed: the schema holds no rehearsal memory ({_describe(exc)})"
        ) from exc
    except psycopg.OperationalError as exc:
        # A lost connection, a server shutting down or restarting, a refused login: the operation failed,
        # and the transaction it was part of was rolled back by the server.
        raise StorageError(f"{doing} failed: the server connection failed ({_describe(exc)})") from exc
    except psycopg.Error as exc:
        raise StorageError(f"{doing} failed: the server refused it ({_describe(exc)})") from exc


def mapped(doing: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a method so that psycopg errors from it surface as ours."""

    def wrap(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            with server_errors(doing):
                return method(*args, **kwargs)

        return inner

    return wrap


class ServerConnection:
    """One psycopg connection (autocommit; transactions are explicit) shared by a memory's stores, so one
    transaction covers records, texts and vectors together."""

    def __init__(self, raw: Any, location: Location, *, read_only: bool) -> None:
        self.raw = raw
        self.location = location
        self.read_only = read_only

    def execute(self, query: Any, params: Sequence[Any] | None = None) -> Any:
        return self.raw.execute(query, params)

    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return bool(self.raw.info.transaction_status != TransactionStatus.IDLE)

    @contextmanager
    def write(self) -> Iterator[None]:
        """A write transaction holding the memory's writer row lock (joins one already open)."""
        if self.in_transaction():
            with self.raw.transaction():  # a savepoint: a failing nested call undoes only its own work
                yield
            return
        with server_errors("committing to the memory"), self.raw.transaction():
            self.raw.execute("SELECT 1 FROM mem_meta WHERE key = 'generation' FOR UPDATE")
            yield

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One REPEATABLE READ transaction, so several statements see one state (joins one already open)."""
        if self.in_transaction():
            yield
            return
        with server_errors("reading the memory"), self.raw.transaction():
            self.raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield

    def close(self) -> None:
        self.raw.close()


def connect(location: Location, *, read_only: bool, register_vector: bool = True) -> ServerConnection:
    """A connection to the memory's schema; StorageError naming the server (never the password)."""
    import psycopg
    from psycopg import sql

    try:
        raw = psycopg.connect(location.conninfo, autocommit=True, connect_timeout=30)
    except psycopg.Error as exc:
        reason = _describe(exc)
        if "no password supplied" in reason:
            # libpq reads PGPASSWORD (or ~/.pgpass) when the URL carries none: the way to keep it out of
            # the command line and the shell's history.
            reason += f"; set {PASSWORD_ENV} (or ~/.pgpass) rather than writing the password into the URL"
        raise StorageError(f"cannot connect to {location.display()}: {reason}") from None
    try:
        with server_errors(f"opening {location.display()}"):
            raw.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(location.schema)))
            if read_only:
                raw.execute("SET default_transaction_read_only = on")
            if register_vector:
                _register_vector(raw, location)
    except BaseException:
        raw.close()
        raise
    return ServerConnection(raw, location, read_only=read_only)


def _register_vector(raw: Any, location: Location) -> None:
    from pgvector.psycopg import register_vector

    try:
        register_vector(raw)
    except Exception as exc:  # psycopg.ProgrammingError: "vector type not found in the database"
        raise ConfigError(
            f"the database at {location.display()} has no pgvector extension; a superuser runs"
            " CREATE EXTENSION vector in it once"
        ) from exc
