"""Vectors carried by a file: ``export --with-vectors`` writes each entry's stored vector (and the name of
the encoder that made it), and ``ingest --vector-field`` reads them back instead of embedding the texts,
which is how an embedding-only memory (no texts to embed again) is copied or restored.

A vector is taken only if it fits the memory it goes to: every row the same width, that width the
memory's, and the encoder the file names (``vector_encoder``) the memory's own; all of it is checked
before anything is added.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rehearsal.embedding import split_backend
from rehearsal.errors import EncoderMismatchError, ValidationError

if TYPE_CHECKING:
    from rehearsal.memory.facade import RehearsalMemory

__all__ = ["VECTOR_ENCODER_FIELD", "VectorColumn"]

VECTOR_ENCODER_FIELD = "vector_encoder"


class VectorColumn:
    """Reads one vector per row from ``field``; remembers the width and the encoders named."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.width: int | None = None
        self.encoders: set[str] = set()
        self.textless = False  # some row brought a vector and no text

    def read(self, item: dict[str, Any], where: str) -> list[float]:
        value = item.get(self.field)
        if not isinstance(value, list) or not value:
            raise ValidationError(f"{where}: {self.field!r} must be a non-empty list of numbers")
        if not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in value
        ):
            raise ValidationError(f"{where}: {self.field!r} holds a value that is not a finite number")
        if self.width is None:
            self.width = len(value)
        elif len(value) != self.width:
            raise ValidationError(
                f"{where}: {self.field!r} has {len(value)} numbers, earlier rows {self.width}"
            )
        encoder = item.get(VECTOR_ENCODER_FIELD)
        if encoder is not None:
            self.encoders.add(str(encoder))
        return [float(x) for x in value]

    def check_fits(self, memory: RehearsalMemory) -> None:
        """Refuse vectors that are not the memory's: another width or another encoder; and rows without
        text for a memory that stores text."""
        if self.width is not None and self.width != memory.dim:
            raise ValidationError(
                f"the file's vectors have {self.width} numbers; the memory's have {memory.dim}"
            )
        others = sorted(self.encoders - {memory.encoder_name})
        if others:
            hint = ""
            if len(others) == 1 and split_backend(others[0])[0] == split_backend(memory.encoder_name)[0]:
                # The same model in another arithmetic: a new memory takes it with --encoder-backend.
                hint = f" (a new memory takes them with --encoder-backend {split_backend(others[0])[1]})"
            raise EncoderMismatchError(
                f"the file's vectors were made by {others}; the memory embeds with {memory.encoder_name!r}"
                + hint
            )
        if self.textless and not memory.embedding_only:
            raise ValidationError(
                "some rows bring a vector and no text; this memory stores text (export with --with-text "
                "as well, or ingest into an --embedding-only memory with --source-field)"
            )
