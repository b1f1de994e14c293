"""Both text stores check a ``seal_many`` batch the same way (rehearsal.store.payloads): a payload that is
not bytes is a ValidationError naming its position, never a TypeError or bytes made up from an int."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MEMORY_DIM

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import ValidationError
from rehearsal.store.layout import new_manifest
from rehearsal.store.protocols import KeyedStore
from rehearsal.store.registry import Backends, create_backends, create_server_backends


@pytest.fixture(params=["sqlite", "postgresql"])
def texts(request: pytest.FixtureRequest, tmp_path: Path, keys: KeyRing) -> Iterator[KeyedStore]:
    stores: Backends
    if request.param == "sqlite":
        folder = tmp_path / "stores"
        folder.mkdir()
        stores = create_backends(folder, keys=keys, dim=MEMORY_DIM)
    else:
        url = request.getfixturevalue("postgres_url")
        manifest = new_manifest(embedding_only=False, encrypted=True, encoder=("test", MEMORY_DIM))
        stores = create_server_backends(url, keys=keys, dim=MEMORY_DIM, manifest=manifest)
    assert stores.keyed is not None
    yield stores.keyed
    stores.close()


@pytest.mark.parametrize(
    ("item", "kind"), [("text", "str"), (3, "int"), (None, "NoneType"), ([1, 2], "list")]
)
def test_a_payload_that_is_not_bytes_is_refused_by_position(
    texts: KeyedStore, item: object, kind: str
) -> None:
    with pytest.raises(ValidationError, match=rf"\[1\] must be bytes, got {kind}$"):
        texts.seal_many("acme", [1, 2], [b"ok", item], purpose="vector")  # type: ignore[list-item]


@pytest.mark.parametrize("payloads", [b"ab", "ab", [b"only one"]])
def test_a_batch_that_is_not_one_payload_per_id_is_refused(texts: KeyedStore, payloads: object) -> None:
    with pytest.raises(ValidationError, match="must be a sequence of bytes as long as"):
        texts.seal_many("acme", [1, 2], payloads, purpose="vector")  # type: ignore[arg-type]


def test_bytes_like_payloads_seal_and_open(texts: KeyedStore) -> None:
    payloads = [b"a", bytearray(b"bc"), memoryview(b"def")]
    blobs = texts.seal_many("acme", [1, 2, 3], payloads, purpose="vector")  # type: ignore[list-item]
    opened = [
        texts.open_sealed("acme", i, blob, purpose="vector") for i, blob in zip([1, 2, 3], blobs, strict=True)
    ]
    assert opened == [b"a", b"bc", b"def"]
