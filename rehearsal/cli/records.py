"""The CLI's input: records for ``rehearsal ingest`` (JSON lines, CSV, saved Hugging Face datasets) and
the values of command-line options.

A reader yields plain dicts, one per input record; :class:`RecordMapper` turns each into the text, metadata
and (embedding-only) source reference that ``RehearsalMemory.add`` takes, naming the record it rejects.
Readers can be iterated more than once, so the CLI checks the whole file before it adds anything.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rehearsal.cli.vector_column import VECTOR_ENCODER_FIELD, VectorColumn
from rehearsal.crypto.keys import validate_tenant
from rehearsal.errors import NotFoundError, ValidationError
from rehearsal.governance.retention import RETENTION_FIELD, retention_deadline
from rehearsal.memory.batch import check_texts
from rehearsal.row_files import read_rows, row_file_kind, row_name

__all__ = [
    "EXTERNAL_ID",
    "FILTERABLE_FIELDS",
    "Record",
    "RecordMapper",
    "RecordSource",
    "field_list",
    "id_list",
    "label_value",
    "open_records",
    "positive_int",
]

# Metadata the catalog indexes for ``where=`` filters; every other chosen field goes to the extra metadata.
FILTERABLE_FIELDS = ("task", "label", "tags")
# Where ``ingest --id-field`` keeps each record's own id (the upsert key).
EXTERNAL_ID = "external_id"
# Set by ``add`` arguments, never by metadata.
_RESERVED_FIELDS = ("id", "tenant", "source")
# "0", "12", "-3"; not "007" or "1e3", which are names, not numbers someone wrote as a label.
_INTEGER = re.compile(r"-?(0|[1-9][0-9]{0,17})")


@dataclass(frozen=True)
class Record:
    """One ingest row on its way into a memory (``RehearsalMemory.add``): text, free metadata (a label
    among it, or none), where its text lives in an embedding-only memory, its tenant and its vector.

    Not a labelled example (:class:`rehearsal.examples.Example`, what streams, updates and the generator
    learn from): a record is shaped for storage, and its label, if any, is one metadata field.
    """

    text: str  # "" for a record that brings its vector and no text (an embedding-only export)
    metadata: dict[str, Any]
    source: str | None
    tenant: str | None = None  # from a per-row tenant column (``--tenant-field``)
    vector: list[float] | None = None  # from ``--vector-field``: the record's embedding, not recomputed


class RecordSource:
    """The records of one input; ``len`` is their number, iteration yields ``(position, dict)``.

    Positions are what a user finds in the file: line numbers for JSON lines, data row numbers (header
    excluded) for CSV, row indices for datasets.
    """

    def __init__(self, path: Path, kind: str, split: str | None = None) -> None:
        self.path = path
        self.kind = kind
        self._split = split
        self._dataset: Any = _load_dataset(path, split) if kind == "dataset" else None
        self._count: int | None = None

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self)
        return self._count

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        if self.kind == "dataset":
            return ((i, dict(row)) for i, row in enumerate(self._dataset))
        return read_rows(self.path, self.kind)

    def check(self, mapper: RecordMapper) -> int:
        """Map every record (raising on the first bad one); the number of records."""
        count = 0
        for position, item in self:
            mapper(item, self.describe(position))
            count += 1
        self._count = count
        never = sorted(name for name in mapper.required if name not in mapper.seen)
        if count and never:
            # A field no record has is a typo, not sparse metadata.
            raise ValidationError(f"no record in {self.path.name} has metadata field(s) {never}")
        return count

    def batches(self, mapper: RecordMapper, size: int) -> Iterator[list[Record]]:
        """The mapped records in lists of ``size`` (the last may be shorter)."""
        batch: list[Record] = []
        for position, item in self:
            batch.append(mapper(item, self.describe(position)))
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def describe(self, position: int) -> str:
        return row_name(self.path, self.kind, position)


def open_records(path: str | Path, *, split: str | None = None) -> RecordSource:
    """The records in ``path``: a folder saved with ``datasets``' ``save_to_disk``, ``*.jsonl``/``*.json``
    (one object per line) or ``*.csv`` (with a header row), either optionally gzip-compressed."""
    where = Path(path)
    if not where.exists():
        raise NotFoundError(f"input {str(where)!r} does not exist")
    if where.is_dir():
        return RecordSource(where, "dataset", split)
    if split is not None:
        raise ValidationError("--split applies to a saved dataset folder, not to a file")
    return RecordSource(where, row_file_kind(where))


def _load_dataset(path: Path, split: str | None) -> Any:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ValidationError(
            "reading a saved dataset needs the 'datasets' package: pip install datasets"
        ) from exc
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise ValidationError(
            f"{str(path)!r} is a folder but not a dataset saved with save_to_disk"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = sorted(loaded)
        if split is None and len(splits) == 1:
            split = splits[0]
        if split not in loaded:
            wanted = "choose one with --split" if split is None else f"no split {split!r}"
            raise ValidationError(f"{str(path)!r} holds splits {splits}: {wanted}")
        return loaded[split]
    if split is not None:
        raise ValidationError(f"{str(path)!r} is a single dataset; it has no splits")
    return loaded


class RecordMapper:
    """Turns input dicts into :class:`Record` s: which field is the text, which go to metadata, the source.

    The usual columns are taken without being named: ``label`` and ``task`` (renamed with ``label_field``
    and ``task_field``) become the record's label and task whenever a record has them; ``task`` instead
    gives every record the same task. Labels have one typed representation: an int, or a class name.
    A label written as a decimal integer (``"3"``, as every CSV value arrives) is the int 3, so a memory
    ingested from CSV replays and filters exactly like one built in Python.
    """

    def __init__(
        self,
        *,
        text_field: str,
        metadata_fields: Sequence[str] | None = None,
        source_field: str | None = None,
        label_field: str = "label",
        task_field: str = "task",
        task: str | None = None,
        retain_until: str | None = None,
        tenant_field: str | None = None,
        id_field: str | None = None,
        vector_field: str | None = None,
    ) -> None:
        # None: every field the records have beyond the text, label, task, tenant, id and source ones.
        self.all_fields = metadata_fields is None
        metadata_fields = () if metadata_fields is None else metadata_fields
        reserved = sorted(set(metadata_fields) & set(_RESERVED_FIELDS))
        if reserved:
            raise ValidationError(
                f"metadata fields may not be named {reserved}: id is assigned and tenant/source are options"
            )
        if text_field in metadata_fields or text_field in (label_field, task_field, tenant_field):
            raise ValidationError(f"field {text_field!r} is the text; it cannot also be metadata")
        if task is not None and (not isinstance(task, str) or not task.strip()):
            raise ValidationError(f"--task must be a non-empty string, got {task!r}")
        if retain_until is not None:
            retention_deadline(retain_until)  # a bad date fails here, before any record is read
        self.text_field = text_field
        # Explicitly named fields must exist in some record (a typo is not sparse metadata); the
        # default label/task columns are taken only where present.
        self.metadata_fields = tuple(metadata_fields)
        self.renamed = {"label": label_field, "task": task_field}
        self.required = set(metadata_fields) | {
            field for name, field in self.renamed.items() if field != name
        }
        self.source_field = source_field
        self.tenant_field = tenant_field
        if tenant_field is not None:
            self.required.add(tenant_field)
        # A record's own id (often a column named "id", which metadata may not use) is kept as
        # EXTERNAL_ID, the key upserts match on.
        self.id_field = id_field
        if id_field is not None:
            self.required.add(id_field)
        self.task = task
        self.retain_until = retain_until
        # Vectors brought by the file (an export --with-vectors): their width and the encoders they name.
        self.vectors = VectorColumn(vector_field) if vector_field is not None else None
        self.seen: set[str] = set()  # fields found in at least one record
        # A renamed label or task leaves a column of that name behind: it is not metadata either.
        self.taken = {text_field, label_field, task_field, "label", "task", *_RESERVED_FIELDS} | {
            name for name in (source_field, tenant_field, id_field, vector_field) if name is not None
        }
        if vector_field is not None:
            self.taken.add(VECTOR_ENCODER_FIELD)

    def __call__(self, item: dict[str, Any], where: str) -> Record:
        vector = self.vectors.read(item, where) if self.vectors is not None else None
        text = item.get(self.text_field)
        if text is None and vector is not None and self.vectors is not None:
            text = ""  # an embedding-only record: its vector stands in for its text
            self.vectors.textless = True
        elif not isinstance(text, str) or not text.strip():
            found = "missing" if text is None else f"{type(text).__name__} {_short(text)}"
            raise ValidationError(
                f"{where}: text field {self.text_field!r} must be a non-empty string, got {found}"
            )
        try:
            if text:  # "" only for a record that brings its vector instead
                check_texts([text])  # a lone surrogate (JSON's "\\ud800") is refused here, before any add
        except ValidationError as exc:
            raise ValidationError(f"{where}: {str(exc).removeprefix('texts[0] ')}") from None
        metadata: dict[str, Any] = {}
        for name, field in self.renamed.items():
            value = item.get(field)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue  # absent, null or an empty CSV cell: this record has none
            self.seen.add(field)
            metadata[name] = _filterable(name, value, where)
        if self.task is not None:
            metadata["task"] = self.task
        if self.id_field is not None and item.get(self.id_field) is not None:
            self.seen.add(self.id_field)
            metadata[EXTERNAL_ID] = item[self.id_field]
        for name in self._extra_fields(item):
            value = item.get(name)
            if value is None or (self.all_fields and value == ""):  # absent, null or an empty CSV cell
                continue
            self.seen.add(name)
            metadata[name] = _filterable(name, value, where) if name in FILTERABLE_FIELDS else value
        if RETENTION_FIELD in metadata:
            try:  # "next week" fails here, not at every later expiry
                retention_deadline(metadata[RETENTION_FIELD])
            except ValidationError as exc:
                raise ValidationError(f"{where}: {exc}") from None
        elif self.retain_until is not None:
            metadata[RETENTION_FIELD] = self.retain_until
        try:
            json.dumps(metadata)
        except (TypeError, ValueError):
            raise ValidationError(f"{where}: metadata is not JSON-serialisable") from None
        return Record(text, metadata, self._source(item, where), self._tenant(item, where), vector)

    def _extra_fields(self, item: dict[str, Any]) -> Sequence[str]:
        if not self.all_fields:
            return self.metadata_fields
        return [name for name in item if name not in self.taken]

    def _tenant(self, item: dict[str, Any], where: str) -> str | None:
        if self.tenant_field is None:
            return None
        value = item.get(self.tenant_field)
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
            raise ValidationError(
                f"{where}: tenant field {self.tenant_field!r} must be a non-empty string, got {_short(value)}"
            )
        self.seen.add(self.tenant_field)
        try:
            return validate_tenant(str(value).strip())
        except ValidationError as exc:
            raise ValidationError(f"{where}: {exc}") from None

    def _source(self, item: dict[str, Any], where: str) -> str | None:
        if self.source_field is None:
            return None
        value = item.get(self.source_field)
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
            raise ValidationError(
                f"{where}: source field {self.source_field!r} must be a non-empty string or int, "
                f"got {_short(value)}"
            )
        return str(value)


def _filterable(name: str, value: Any, where: str) -> Any:
    if name == "task":
        if not isinstance(value, str):
            raise ValidationError(f"{where}: 'task' must be a string, got {_short(value)}")
        return value
    if name == "label":
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValidationError(f"{where}: 'label' must be a string or int, got {_short(value)}")
        return label_value(value)
    # tags: a list of strings, or (CSV) one string of comma-separated tags.
    if isinstance(value, str):
        return [tag.strip() for tag in value.split(",") if tag.strip()]
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise ValidationError(f"{where}: 'tags' must be a list of strings, got {_short(value)}")
    return value


def label_value(value: str | int) -> str | int:
    """A label's one representation: ints stay ints, a decimal integer string becomes that int (CSV cells
    are strings), any other string is a class name."""
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- option values (argparse ``type=``: an ArgumentTypeError becomes a usage error) -------------------


def id_list(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``; an empty item (``"1,,2"``, a trailing comma) is refused, as a
    sign of a list assembled wrongly."""
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integer ids, got {text!r}") from None
    return ids


def field_list(text: str) -> list[str]:
    """``"task, label"`` -> ``["task", "label"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
