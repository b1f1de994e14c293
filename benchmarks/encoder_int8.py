"""An int8 MiniLM for ingest: texts/s of int8 variants against the torch fp32 encoder, and how far their
neighbours move (recall@10 of each text's ten nearest against fp32's, mean and least cosine to fp32).

Real texts: every bundled WordNet gloss and sentiment text but the calibration glosses (the int8 model's
activation ranges were measured on those), capped at ``--texts``. The backends take turns chunk by chunk
(the order rotates) so a change in background load hits all alike; a figure is a ratio of summed times.
One thread per backend unless ``--threads`` says otherwise.

Variants (all ONNX Runtime on the model exported from the bundled MiniLM, length-sorted batches, the
sentence-transformers pooling):
- ``ort fp32``: the exported graph as it is;
- ``ort dynamic int8``: ONNX Runtime's ``quantize_dynamic``, per-channel weights, one scale per activation
  tensor (what was measured first: recall too low);
- ``per-token``, ``+ smoothing``, ``+ outliers k``: the rewrite of ``rehearsal/int8_graph.py`` step by step
  (the last is the backend ``--encoder-backend int8`` runs).

With ``--openvino`` (needs ``pip install openvino nncf``; neither is a dependency of rehearsal), the same
exported graph under OpenVINO's CPU runtime too: as it is with the bf16 precision hint (AMX here); with
int8 weights (NNCF ``compress_weights``, asymmetric) and bf16 activations, and with OpenVINO's dynamic
int8 activations in groups of 64; and NNCF's static int8 quantization for transformers (SmoothQuant,
calibrated on the same glosses as ours).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/encoder_int8.py --texts 20000 --threads 1

Prints a table and writes ``benchmarks/results/encoder_int8_<threads>t.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
from _harness import provenance, write_results

from rehearsal.embedding import default_model_path, load_encoder
from rehearsal.int8_graph import (
    OUTLIER_CHANNELS,
    RECIPE,
    SMOOTHING_ALPHA,
    activation_ranges,
    calibration_texts,
    export_fp32,
    quantize_graph,
)
from rehearsal.int8_runtime import Int8Runner, cpu_session, pooled_encode
from rehearsal.threads import size_thread_pools


def real_texts(limit: int) -> list[str]:
    """WordNet glosses then sentiment texts from the bundled streams, calibration glosses left out."""
    held_out = set(calibration_texts())
    texts: list[str] = []
    for name in ("wordnet_stream.jsonl.gz", "sentiment_stream.jsonl.gz"):
        data = resources.files("rehearsal.data").joinpath(name)
        with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
            texts += [
                t for t in (json.loads(line)["text"] for line in lines if line.strip()) if t not in held_out
            ]
    return texts[:limit]


def neighbours(x: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """Each row's k nearest other rows by inner product, (n, k); blockwise, so 20k rows fit in memory."""
    out = np.empty((len(x), k), dtype=np.int64)
    for start in range(0, len(x), block):
        sims = x[start : start + block] @ x.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        out[start : start + block] = np.argpartition(-sims, k, axis=1)[:, :k]
    return out


def recall_at(reference: np.ndarray, other: np.ndarray, k: int = 10) -> float:
    a, b = neighbours(reference, k), neighbours(other, k)
    return float(np.mean([len(set(r) & set(s)) / k for r, s in zip(a, b, strict=True)]))


def onnx_backends(threads: int, skip_dynamic: bool) -> dict[str, Any]:
    """name -> encode(texts) for every ONNX variant, built from one export and one calibration."""
    import onnx

    torch_encoder = load_encoder()
    runner = Int8Runner(
        default_model_path(),
        torch_encoder.model.tokenizer,
        torch_encoder.model.max_seq_length,
        threads=threads,
    )
    with tempfile.TemporaryDirectory() as scratch:
        fp32_file = Path(scratch) / "fp32.onnx"
        export_fp32(default_model_path(), fp32_file)
        fp32 = onnx.load(str(fp32_file))
        models: dict[str, bytes] = {"ort fp32": fp32.SerializeToString()}
        if not skip_dynamic:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            dynamic_file = Path(scratch) / "dynamic.onnx"
            quantize_dynamic(
                fp32_file,
                dynamic_file,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
            )
            models["ort dynamic int8 (per-channel)"] = dynamic_file.read_bytes()
    ranges = activation_ranges(fp32, calibration_texts(), runner.tokenize, threads=threads)
    k = OUTLIER_CHANNELS
    models["per-token int8"] = quantize_graph(fp32, ranges, outliers=0, smooth=False)
    models[f"per-token + smoothing {SMOOTHING_ALPHA}"] = quantize_graph(fp32, ranges, outliers=0)
    models[f"per-token + smoothing + {k} outliers fp32"] = quantize_graph(fp32, ranges)
    backends: dict[str, Any] = {}
    for name, model in models.items():
        blob = model if isinstance(model, bytes) else model.SerializeToString()
        session = cpu_session(blob, threads)
        backends[name] = lambda texts, s=session: pooled_encode(s, runner.tokenize, texts, 64)
    return backends


def openvino_backends(threads: int, tokenize: Any) -> dict[str, Any]:
    """name -> encode(texts) for the OpenVINO variants of the module docstring."""
    import nncf
    import openvino as ov

    core = ov.Core()
    with tempfile.TemporaryDirectory() as scratch:
        fp32_file = Path(scratch) / "fp32.onnx"
        export_fp32(default_model_path(), fp32_file)
        fp32 = core.read_model(str(fp32_file))
        int8_weights = nncf.compress_weights(
            core.read_model(str(fp32_file)), mode=nncf.CompressWeightsMode.INT8_ASYM
        )
        glosses = calibration_texts()
        calibration = nncf.Dataset([tokenize(glosses[i : i + 16]) for i in range(0, len(glosses), 16)])
        static = nncf.quantize(
            core.read_model(str(fp32_file)), calibration, model_type=nncf.ModelType.TRANSFORMER
        )
    variants = {
        "openvino bf16": (fp32, 0),
        "openvino int8 weights, bf16 activations": (int8_weights, 0),
        "openvino int8 weights, dynamic int8 activations (groups of 64)": (int8_weights, 64),
        "openvino static int8 (nncf transformer)": (static, 0),
    }
    backends: dict[str, Any] = {}
    for name, (model, group) in variants.items():
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": "bf16",
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": group,
        }
        session = _OpenVinoSession(core.compile_model(model, "CPU", config).create_infer_request())
        backends[name] = lambda texts, s=session: pooled_encode(s, tokenize, texts, 64)
    return backends


class _OpenVinoSession:
    """An OpenVINO infer request with the ``run`` of an ONNX Runtime session, for ``pooled_encode``."""

    def __init__(self, request: Any) -> None:
        self.request = request

    def run(self, _outputs: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [next(iter(self.request.infer(feeds).values()))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-dynamic", action="store_true", help="leave out quantize_dynamic")
    parser.add_argument("--skip-bf16", action="store_true", help="leave out torch bf16 autocast")
    parser.add_argument("--openvino", action="store_true", help="add OpenVINO variants (openvino, nncf)")
    args = parser.parse_args()
    plan = size_thread_pools(args.threads)
    record = provenance(threads=plan.threads, recipe=RECIPE)
    texts = real_texts(args.texts)
    backends: dict[str, Any] = {"torch fp32": load_encoder().encode}
    if not args.skip_bf16:
        backends["torch bf16 autocast"] = load_encoder(backend="bf16").encode
    backends.update(onnx_backends(plan.threads, args.skip_dynamic))
    if args.openvino:
        model = load_encoder().model  # its tokenizer and truncation, as the int8 backend takes them
        runner = Int8Runner(default_model_path(), model.tokenizer, model.max_seq_length, threads=plan.threads)
        backends.update(openvino_backends(plan.threads, runner.tokenize))
    for encode in backends.values():
        encode(texts[:64])  # warm: first-call allocations are not throughput
    seconds = dict.fromkeys(backends, 0.0)
    vectors: dict[str, list[np.ndarray]] = {name: [] for name in backends}
    names = list(backends)
    for i, start in enumerate(range(0, len(texts), args.chunk)):
        chunk = texts[start : start + args.chunk]
        for name in names[i % len(names) :] + names[: i % len(names)]:
            began = time.perf_counter()
            vectors[name].append(backends[name](chunk))
            seconds[name] += time.perf_counter() - began
    report(texts, vectors, seconds, plan.threads, record, args)


def report(
    texts: list[str],
    vectors: dict[str, list[np.ndarray]],
    seconds: dict[str, float],
    threads: int,
    record: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    reference = np.concatenate(vectors["torch fp32"])
    rows: dict[str, dict[str, float]] = {}
    for name, parts in vectors.items():
        v = np.concatenate(parts)
        cosine = np.sum(reference * v, axis=1)
        rows[name] = {
            "texts_per_s": len(texts) / seconds[name],
            "seconds": seconds[name],
            "x_torch_fp32": seconds["torch fp32"] / seconds[name],
            "recall_at_10_vs_fp32": 1.0 if name == "torch fp32" else recall_at(reference, v),
            "mean_cosine_to_fp32": float(np.mean(cosine)),
            "min_cosine_to_fp32": float(np.min(cosine)),
        }
    load = f"load {record['machine']['load_1m']:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    print(f"{len(texts)} texts, {threads} thread(s), {load}")
    print("| backend | texts/s | x torch fp32 | recall@10 vs fp32 | mean cos | min cos |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['texts_per_s']:.0f} | {r['x_torch_fp32']:.2f} | {r['recall_at_10_vs_fp32']:.3f} "
            f"| {r['mean_cosine_to_fp32']:.4f} | {r['min_cosine_to_fp32']:.4f} |"
        )
    payload = {"texts": len(texts), "chunk": args.chunk, "backends": rows}
    path = write_results(f"encoder_int8_{threads}t", payload, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
