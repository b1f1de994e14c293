"""Server URLs as people see them: the one redaction every message, report and log line goes through.

A server URL can carry a secret in two places: the user-info (``postgresql://user:SECRET@host/db``,
``milvus://user:SECRET@host:port``) and the query (libpq takes ``?password=SECRET``, and
``sslpassword``). :func:`redact_url` removes both and works on text ``urllib`` refuses (a bad port, an
unclosed ``[::1``), since those are exactly the URLs that end up in error messages.
:func:`split_secret` is the same cut for a caller that still has to connect: the URL without its secret,
and the secret.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

__all__ = ["SECRET_QUERY_KEYS", "redact", "redact_text", "redact_url", "split_secret"]

SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<netloc>[^/?#]*)(?P<rest>.*)", re.DOTALL)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]*")


def split_secret(text: str, keys: frozenset[str] = SECRET_QUERY_KEYS) -> tuple[str, str | None]:
    """(``text`` without its password, the password unquoted or None). Text that is not a URL comes back
    unchanged. ``keys``: the query parameters taken out. A password in the query wins over one in the
    user-info, as it does for libpq."""
    match = _URL.fullmatch(text)
    if match is None:
        return text, None
    netloc, rest = match["netloc"], match["rest"]
    secret: str | None = None
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        user, _, password = userinfo.partition(":")
        secret = urllib.parse.unquote(password)
        netloc = f"{user}@{host}" if user else host
    path, question, query_and_fragment = rest.partition("?")
    if question:
        query, hash_, fragment = query_and_fragment.partition("#")
        kept = []
        for pair in query.split("&"):
            key, _, value = pair.partition("=")
            if urllib.parse.unquote_plus(key).strip().lower() in keys:
                secret = urllib.parse.unquote_plus(value)
            elif pair:
                kept.append(pair)
        rest = path + (f"?{'&'.join(kept)}" if kept else "") + hash_ + fragment
    return match["scheme"] + netloc + rest, secret


def redact_url(text: str) -> str:
    """``text`` (a URL) without any password it carries (see the module docstring); never raises."""
    return split_secret(text)[0]


def redact_text(text: str) -> str:
    """``text`` (a message, a report line) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text) if "://" in text else text


def redact(value: Any) -> Any:
    """``value`` (a report: dicts, lists, strings, numbers) with every URL in its strings redacted."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value
