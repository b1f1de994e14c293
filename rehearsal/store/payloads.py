"""The one check of a batch of payloads handed to a text store's ``seal_many`` (every backend's): a
sequence (not a single bytes or str, which would seal one record per byte or character), as long as
its ids, of bytes-like items only. A str item would otherwise be encoded (or refused) differently by each
backend; checking first means a bad batch is a ValidationError that seals nothing."""

from __future__ import annotations

from collections.abc import Sequence

from rehearsal.errors import ValidationError

__all__ = ["check_payloads"]


def check_payloads(payloads: object, count: int, *, name: str, ids_name: str) -> list[bytes]:
    """``payloads`` as a list of bytes, or ValidationError naming the argument (``name``) and, for a wrong
    item, its position; ``count`` is the number of ids (``ids_name``) the batch must match."""
    if isinstance(payloads, bytes | bytearray | memoryview | str) or not isinstance(payloads, Sequence):
        raise ValidationError(f"{name} must be a sequence of bytes as long as {ids_name}")
    if len(payloads) != count:
        raise ValidationError(f"{name} must be a sequence of bytes as long as {ids_name}")
    for pos, payload in enumerate(payloads):
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise ValidationError(f"{name}[{pos}] must be bytes, got {type(payload).__name__}")
    return [bytes(p) for p in payloads]
