"""``--encoder PATH`` and ``--device`` for the verbs that embed text (``init``, ``ingest``, ``search``).

A memory records its encoder's name (for a model folder: the folder's name) and refuses vectors from
another; the CLI cannot load a non-default model by name, so a memory made with ``--encoder`` needs the
same option on every verb that embeds, and says so when it is missing. ``--device`` (``cuda``, ``mps``,
``cuda:1``) moves the encoder off the CPU; it changes speed, not vectors. ``--encoder-backend bf16`` changes
both a little (neighbours within 1% of fp32's), ``int8`` a little more (about 2%; CPU only, needs the
``int8`` extra), so a memory records the backend in its encoder's name and refuses another arithmetic.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rehearsal.arithmetic import ENCODER_BACKENDS
from rehearsal.errors import ConfigError
from rehearsal.store.layout import peek_manifest

if TYPE_CHECKING:
    from rehearsal.embedding import Encoder

__all__ = ["add_encoder_arguments", "check_encoder_given", "encoder_from_args"]


def add_encoder_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--encoder",
        metavar="PATH",
        help="a local sentence-transformers model folder (default: the packaged all-MiniLM-L6-v2)",
    )
    p.add_argument("--device", help="where the encoder runs: cpu (default), cuda, cuda:1, mps")
    p.add_argument(
        "--encoder-backend",
        choices=ENCODER_BACKENDS,
        help="the encoder's arithmetic for a new memory: fp32 (default, the reference), bf16 (about 2x "
        "faster on CPUs with native bf16), int8 (ONNX Runtime, built at first use; pip install "
        "'rehearsal[int8]'), openvino (OpenVINO's CPU runtime, bf16 where native, about 3x; pip install "
        "'rehearsal[openvino]'), auto (bf16 where native); an existing memory uses its own",
    )


def encoder_from_args(args: argparse.Namespace) -> Encoder | None:
    """The encoder the options ask for, or None for the memory's default (loaded when first needed)."""
    path, device = getattr(args, "encoder", None), getattr(args, "device", None)
    backend = getattr(args, "encoder_backend", None)
    if path is None and device is None and backend is None:
        return None
    from rehearsal.embedding import SentenceTransformerEncoder

    try:
        return SentenceTransformerEncoder(path, device=device or "cpu", backend=backend or "fp32")
    except (RuntimeError, ValueError) as exc:  # torch's words for a device it does not have
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot load the encoder on device {device or 'cpu'!r}: {first}") from None


def check_encoder_given(args: argparse.Namespace, path: str) -> None:
    """Fail before anything loads when the memory at ``path`` was made with ``--encoder`` and this
    command does not repeat it."""
    from rehearsal.embedding import DEFAULT_ENCODER_NAME, split_backend

    if getattr(args, "encoder", None) is not None:
        return
    try:
        name = peek_manifest(path)["encoder"]["name"]
    except (KeyError, TypeError):
        return  # opening reports an unreadable manifest
    if not isinstance(name, str) or split_backend(name)[0] != DEFAULT_ENCODER_NAME:
        raise ConfigError(f"the memory at {path!r} embeds with encoder {name!r}: pass --encoder PATH to it")
