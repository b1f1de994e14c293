"""nprobe is calibrated at build time so recall@10 holds on the data the index actually holds."""

import numpy as np

from rehearsal.store.faiss.index import FaissIndex, choose_nprobe
from rehearsal.store.faiss.tuning import TARGET_RECALL


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _recall(index: FaissIndex, data: np.ndarray, queries: np.ndarray) -> float:
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    _, found = index.search(queries, 10)
    return float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)]))


def test_diffuse_data_gets_more_probes_and_keeps_recall():
    rng = np.random.default_rng(0)
    data = _unit(rng.normal(size=(20_000, 32)))  # no cluster structure: the hard case for IVF
    index = FaissIndex.build(data, np.arange(len(data)), spec="IVF128,Flat")
    assert index.nprobe > choose_nprobe(128)
    assert _recall(index, data, _unit(rng.normal(size=(300, 32)))) >= 0.95


def test_clustered_data_keeps_the_starting_nprobe():
    rng = np.random.default_rng(1)
    centres = _unit(rng.normal(size=(128, 32)))
    data = _unit(centres[rng.integers(0, 128, 20_000)] + 0.05 * rng.normal(size=(20_000, 32)))
    index = FaissIndex.build(data, np.arange(len(data)), spec="IVF128,Flat")
    assert index.nprobe == choose_nprobe(128)
    queries = _unit(centres[rng.integers(0, 128, 300)] + 0.05 * rng.normal(size=(300, 32)))
    assert _recall(index, data, queries) >= TARGET_RECALL


def test_calibrated_nprobe_survives_a_snapshot():
    rng = np.random.default_rng(2)
    data = _unit(rng.normal(size=(8_000, 16)))
    index = FaissIndex.build(data, np.arange(len(data)), spec="IVF64,Flat")
    assert FaissIndex.from_bytes(index.to_bytes()).nprobe == index.nprobe
