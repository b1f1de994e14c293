"""Which FAISS index suits a memory of a given size: a pure function of the situation, tested by table.

Flat (exact) search below ``FLAT_MAX_VECTORS``; above it an IVF index whose list count and code size grow
with the memory, probed at ``choose_nprobe`` lists per query. The figures behind each constant are in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import math
import re

import numpy as np

from rehearsal.errors import ValidationError

__all__ = ["FLAT_SPEC", "IVF_CODES", "check_int", "choose_index_spec", "choose_nprobe", "parse_spec"]

FLAT_SPEC = "IDMap,Flat"
# Below this many vectors exact search is fast enough (see benchmarks/RESULTS.md) and needs no training.
FLAT_MAX_VECTORS = 50_000
# IVF lists: about 8·sqrt(n), a power of two, with at least 39 vectors per list (FAISS's k-means floor).
# Short lists keep the scan per probe small: at 1M x 384, IVF4096,SQ8 at nprobe 8 ran 21x flat's speed,
# IVF8192,Flat at nprobe 8-16 ran 28-74x (benchmarks/RESULTS.md).
LISTS_PER_SQRT_N = 8
MIN_POINTS_PER_LIST = 39
# IVF lists hold 8-bit scalar-quantised codes (residuals from the list centre): 1 byte per dimension, so
# the snapshot costs ~0.4 KB per entry at d=384 beside the catalog's sealed float16 copy, which is what keeps
# a memory under 1.5 KB per entry. Half-precision codes (2 bytes per dimension) gave recall@10 1.000 where
# SQ8 gives 0.97-0.98 (clustered 100k, benchmarks/RESULTS.md); SQ8 meets the 0.95 bar with room to spare.
IVF_CODES = "SQ8"
# k-means trains on a seeded sample of this many points per list, not on the whole memory.
TRAIN_POINTS_PER_LIST = 40
# 16 probes: recall@10 0.976 on the noisy 200k benchmark set where 8 gave 0.79; 1.0 on clustered 1M.
MIN_NPROBE = 16
NPROBE_DIVISOR = 512
# A filtered IVF search scores the allowed vectors exactly (reconstructed through the direct map) when
# there are few of them, or when the widened probe would scan a quarter of the lists or more (1% of 1M
# allowed scanned 3,200 of 8,192 lists at 11 ms/query; reconstructing 10k vectors costs ~12 ms per call).
EXACT_FILTER_ALWAYS = 4_096
EXACT_FILTER_MAX = 65_536
FILTER_PROBE_FACTOR = 2

_SPEC_RE = re.compile(r"^(?:IDMap,Flat|IVF(?P<nlist>[1-9][0-9]*),(?P<codes>Flat|SQfp16|SQ8))$")


def check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValidationError(f"'{name}' must be an integer, got {value!r}")
    if value < minimum:
        raise ValidationError(f"'{name}' must be >= {minimum}, got {value}")
    return int(value)


def parse_spec(spec: str) -> int:
    """The number of IVF lists of a supported spec, 0 for the flat index."""
    match = _SPEC_RE.match(spec) if isinstance(spec, str) else None
    if match is None:
        raise ValidationError(
            f"unsupported index spec {spec!r}; use 'IDMap,Flat' or 'IVF<n>,' + one of Flat, SQfp16, SQ8"
        )
    return int(match["nlist"]) if match["nlist"] else 0


def choose_index_spec(n_vectors: int, dim: int) -> str:
    """The FAISS factory string that suits a memory of ``n_vectors`` vectors of width ``dim``."""
    n = check_int("n_vectors", n_vectors, minimum=0)
    check_int("dim", dim, minimum=1)  # the codes do not depend on the width, but a bad one is an error
    if n < FLAT_MAX_VECTORS:
        return FLAT_SPEC
    nlist = 2 ** round(math.log2(LISTS_PER_SQRT_N * math.sqrt(n)))
    nlist = min(nlist, 2 ** int(math.log2(n // MIN_POINTS_PER_LIST)))
    return f"IVF{nlist},{IVF_CODES}"


def choose_nprobe(nlist: int) -> int:
    """Lists probed per query: 16, or 1/512 of the lists past 8192 (see benchmarks/RESULTS.md)."""
    lists = check_int("nlist", nlist, minimum=1)
    return min(lists, max(MIN_NPROBE, lists // NPROBE_DIVISOR))
