"""Shared, seeded fixtures. The encoder is the packaged MiniLM, loaded offline once per session."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from typing import Any

import numpy as np
import pytest

from rehearsal.crypto import KeyRing


@pytest.fixture
def keys() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def encoder() -> Any:
    from rehearsal.embedding import load_encoder

    return load_encoder()
