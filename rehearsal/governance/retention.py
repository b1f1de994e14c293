"""Retention dates: records whose ``retain_until`` has passed are removed from index and vault, and logged.

A record carries its retention date in its metadata, ``{"retain_until": "2025-01-31"}`` (an ISO date or
an ISO datetime with a timezone; it lands in the catalog's extra metadata). A date means "keep through
that day, UTC": the record expires once ``now`` is on a later day. A datetime expires once ``now`` is past
it. Records without ``retain_until`` are kept.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from rehearsal.errors import ValidationError
from rehearsal.governance.audited import log_delete

if TYPE_CHECKING:
    from rehearsal.governance.audit_log import AuditLog
    from rehearsal.memory.facade import RehearsalMemory

__all__ = [
    "RETENTION_FIELD",
    "expire",
    "expired_ids",
    "parse_now",
    "retention_deadline",
    "scan_retention",
    "unreadable_retention",
]

RETENTION_FIELD = "retain_until"


def retention_deadline(value: object, *, record: int | None = None) -> dt.datetime:
    """The instant after which a record with this ``retain_until`` value has expired (UTC)."""
    where = f" of record {record}" if record is not None else ""
    if not isinstance(value, str):
        raise ValidationError(
            f"{RETENTION_FIELD}{where} must be an ISO date string, got {type(value).__name__}"
        )
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{RETENTION_FIELD}{where} is not an ISO date: {value[:40]!r}") from None
    if moment.tzinfo is None:
        raise ValidationError(f"{RETENTION_FIELD}{where} needs a timezone (e.g. 'Z' or '+00:00'): {value!r}")
    return moment.astimezone(dt.timezone.utc)


def parse_now(value: str | dt.date | dt.datetime | None) -> dt.datetime:
    """``now`` as an aware UTC datetime: None is the current time, a date is its midnight UTC."""
    if value is None:
        return dt.datetime.now(dt.timezone.utc)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValidationError(f"'now' needs a timezone, got {value.isoformat()!r}")
        return value.astimezone(dt.timezone.utc)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), tzinfo=dt.timezone.utc)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value) if len(value) > 10 else dt.date.fromisoformat(value)
        except ValueError:
            raise ValidationError(f"'now' is not an ISO date or datetime: {value[:40]!r}") from None
        return parse_now(parsed)
    raise ValidationError(f"'now' must be an ISO string, a date or a datetime, got {type(value).__name__}")


def expired_ids(memory: RehearsalMemory, *, now: str | dt.date | dt.datetime | None = None) -> list[int]:
    """Ids of the records whose retention date has passed at ``now``, ascending (records whose date cannot
    be read are left alone; :func:`unreadable_retention` names them)."""
    return scan_retention(memory, now=now)[0]


def unreadable_retention(memory: RehearsalMemory) -> dict[int, str]:
    """Records whose ``retain_until`` is not a date this module reads, with the reason: one bad value
    written before ingest checked it must not stop every later expiry."""
    return scan_retention(memory)[1]


def scan_retention(
    memory: RehearsalMemory, *, now: str | dt.date | dt.datetime | None = None
) -> tuple[list[int], dict[int, str]]:
    """(expired ids ascending, {id: why its date is unreadable}).

    Reads every catalog row: the retention date is extra metadata, which the catalog does not index.
    """
    moment = parse_now(now)
    expired: list[int] = []
    unreadable: dict[int, str] = {}
    for entry_id, row in sorted(memory.entries(memory.ids()).items()):
        if RETENTION_FIELD not in row.extra:
            continue
        try:
            deadline = retention_deadline(row.extra[RETENTION_FIELD], record=entry_id)
        except ValidationError as exc:
            unreadable[entry_id] = str(exc)
            continue
        if deadline <= moment:
            expired.append(entry_id)
    return expired, unreadable


def expire(
    memory: RehearsalMemory,
    *,
    now: str | dt.date | dt.datetime | None = None,
    log: AuditLog | None = None,
    dry_run: bool = False,
    actor: str | None = None,
) -> list[int]:
    """Remove the expired records (index, catalog and vault together) and log it; returns their ids.

    With ``dry_run`` nothing is removed or logged. The audit entry is written after the deletion has
    committed, and only when something was removed.
    """
    moment = parse_now(now)
    ids = expired_ids(memory, now=moment)
    if dry_run or not ids:
        return ids
    memory.delete(ids)
    if log is not None:
        stamp = moment.isoformat().replace("+00:00", "Z")
        log_delete(log, ids, kind="expire", actor=actor, generation=memory.generation, now=stamp)
    return ids
