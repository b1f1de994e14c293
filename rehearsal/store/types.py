"""The records a store hands back: an entry's row (everything but its vector) and a search hit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["EntryRow", "Hit"]


@dataclass(frozen=True)
class Hit:
    """One search result: the entry's id, its cosine similarity to the query, and its metadata."""

    id: int
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EntryRow:
    """What the catalog stores about one entry apart from its vector."""

    id: int
    tenant: str
    task: str | None
    label: str | int | None
    tags: tuple[str, ...]
    extra: dict[str, Any]
    source: str | None

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = dict(self.extra)
        meta.update(tenant=self.tenant, task=self.task, label=self.label, tags=list(self.tags))
        if self.source is not None:
            meta["source"] = self.source
        return meta
