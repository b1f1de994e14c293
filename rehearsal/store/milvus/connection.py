"""Reaching a Milvus server: ``milvus://`` locations, the pymilvus client, and its errors turned into ours.

A location is ``milvus://HOST:PORT`` (``milvus+https://`` for TLS), optionally with ``USER:PASSWORD@``
before the host; it names a server, and the memory names its own collection there. The password never
appears in a message or a repr.
"""

from __future__ import annotations

import importlib
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rehearsal.errors import ConfigError, RehearsalError, StorageError
from rehearsal.store.urls import redact_url

__all__ = ["SCHEMES", "MilvusLocation", "connect", "milvus_errors", "parse_location"]

SCHEMES = ("milvus", "milvus+http", "milvus+https")
_CONNECT_ATTEMPTS = 3
_CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class MilvusLocation:
    """Where a Milvus server is: ``uri`` as pymilvus takes it, and credentials (kept out of reprs)."""

    uri: str
    user: str = ""
    password: str = field(default="", repr=False)

    def __str__(self) -> str:
        who = f"{self.user}@" if self.user else ""
        scheme, _, rest = self.uri.partition("://")
        return f"milvus{'+https' if scheme == 'https' else ''}://{who}{rest}"


def parse_location(text: str) -> MilvusLocation:
    """The server named by a ``milvus://`` URL; ConfigError (without the password) when it is malformed."""
    shown = redact_url(text)
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError as exc:
        raise ConfigError(f"malformed Milvus location {shown!r}: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise ConfigError(f"not a Milvus location: {shown!r}; expected milvus://HOST:PORT")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"Milvus location {shown!r} has a bad port") from exc
    if not parts.hostname or port is None:
        raise ConfigError(f"Milvus location {shown!r} needs a host and a port (milvus://HOST:PORT)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(
            f"Milvus location {shown!r} takes no path or query; the memory names its own collection"
        )
    http = "https" if parts.scheme == "milvus+https" else "http"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return MilvusLocation(
        f"{http}://{host}:{port}",
        urllib.parse.unquote(parts.username or ""),
        urllib.parse.unquote(parts.password or ""),
    )


@contextmanager
def milvus_errors(doing: str) -> Iterator[None]:
    """Re-raise pymilvus's and gRPC's errors inside the block as StorageError saying what failed."""
    try:
        yield
    except RehearsalError:
        raise
    except Exception as exc:
        exceptions: Any = importlib.import_module("pymilvus.exceptions")
        if isinstance(exc, exceptions.MilvusException):
            raise StorageError(f"{doing} failed: Milvus refused it ({exc.message})") from exc
        if type(exc).__module__.startswith("grpc"):
            raise StorageError(f"{doing} failed: the Milvus connection broke ({type(exc).__name__})") from exc
        raise


def connect(location: MilvusLocation) -> Any:
    """A ``pymilvus.MilvusClient`` for ``location``; StorageError when the server does not answer."""
    try:
        pymilvus: Any = importlib.import_module("pymilvus")
    except ImportError as exc:
        raise ConfigError("the Milvus vector index needs pymilvus: pip install 'rehearsal[milvus]'") from exc
    for attempt in range(_CONNECT_ATTEMPTS):
        started = time.monotonic()
        try:
            return pymilvus.MilvusClient(
                uri=location.uri, user=location.user, password=location.password, timeout=_CONNECT_TIMEOUT_S
            )
        except Exception as exc:
            # A live gRPC server may turn a new channel away at once (an UNAVAILABLE "Too many pings" GOAWAY
            # was seen from milvus-lite under load; pymilvus wraps it in a MilvusException caused by it): a
            # fresh channel is tried. A server that is not there fails only after the timeout: no retry.
            causes = [e for e in (exc, exc.__cause__) if e is not None]
            turned_away = any(type(e).__module__.startswith("grpc") for e in causes)
            quick = time.monotonic() - started < _CONNECT_TIMEOUT_S / 2
            if not (turned_away and quick) or attempt == _CONNECT_ATTEMPTS - 1:
                with milvus_errors(f"connecting to Milvus at {location}"):
                    raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")  # the loop returns or raises
