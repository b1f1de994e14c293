"""A staged candidate: what ``rehearsal update --stage`` measured, ``shadow`` adds to and ``promote`` ships.

It lives in the deployment's ``pending.json`` under a keyed tag (``Deployment.pending`` checks the tag
before this reads the body); this is the body's shape, read with :meth:`StagedCandidate.from_dict` and
written with :meth:`StagedCandidate.to_dict`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rehearsal.errors import StoreFormatError

__all__ = ["StagedCandidate"]

# Written only once there is something to say; a file without them reads as None.
_OPTIONAL = ("gate_preview", "shadow", "live")


@dataclasses.dataclass
class StagedCandidate:
    update: str
    weights: str  # the candidate's weights folder, relative to the deployment
    generation_before: int  # the memory's audited generation when it was staged
    tasks: list[str]
    new_tasks: list[str]
    before: dict[str, Any]  # the current version's measurements
    after: dict[str, Any]  # the candidate's
    staged: dict[str, list[list[int]]]  # task -> [current right (0/1), candidate right] per suite example
    suite_ids: list[int]
    flags: list[list[str]] = dataclasses.field(default_factory=list)  # [code, reason] the scans raised
    gate_preview: dict[str, Any] | None = None  # what the gate would decide at staging
    shadow: dict[str, Any] | None = None  # the last shadow or canary report
    live: dict[str, Any] | None = None  # its per-example evidence, which promote's gate judges

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: v for k, v in data.items() if not (k in _OPTIONAL and v is None)}

    @classmethod
    def from_dict(cls, data: Any) -> StagedCandidate:
        if not isinstance(data, dict):
            raise StoreFormatError(f"a staged candidate must be a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        required = {
            name
            for name, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if unknown or missing:
            raise StoreFormatError(f"a staged candidate with unknown fields {unknown}, missing {missing}")
        if not isinstance(data["update"], str) or not isinstance(data["weights"], str):
            raise StoreFormatError("a staged candidate names its update and weights as text")
        return cls(**data)
