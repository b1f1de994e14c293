"""Building the int8 MiniLM: export the bundled model to ONNX, measure its activations on real glosses,
and rewrite every weight MatMul into an int8 one that keeps the encoder's neighbours.

Why not ONNX Runtime's own quantizers: its dynamic int8 quantizes each activation tensor with one scale,
and MiniLM's activations have a few huge values (the [CLS] token, and input channels 99 and 223 of every
LayerNorm output reach 28 where the median channel stays under 2), so one scale wastes most of the 8 bits:
recall@10 of its neighbours against fp32's was 0.78-0.91 here. Its weight-only 8-bit MatMulNBits kept
recall but ran no faster than fp32. The rewrite below keeps what those lose:

- activations are quantized per token (one scale per row, computed at run time), so [CLS] gets its own;
- the few input channels that are outliers on the calibration texts bypass quantization (a thin fp32
  MatMul over just those channels, added back), and the rest are smoothed (SmoothQuant: divide activation
  channel j by s_j and multiply weight row j by s_j, which moves range from activations into weights);
- weights are int8, symmetric, one scale per output column;
- MatMuls that read the same activation (query, key, value) share one quantization of it;
- the per-token scale goes into ORT's MatMulIntegerToFloat, so the output takes no extra pass.

Measured in ``benchmarks/encoder_int8.py``; the table is in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import gzip
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CALIBRATION_TEXTS",
    "OUTLIER_CHANNELS",
    "RECIPE",
    "SMOOTHING_ALPHA",
    "activation_ranges",
    "calibration_texts",
    "export_fp32",
    "quantize_graph",
]

OUTLIER_CHANNELS = 4  # per MatMul input, kept in fp32
SMOOTHING_ALPHA = 0.5
CALIBRATION_TEXTS = 256
# Written into the cache key: a change here must not reuse a model quantized the old way.
RECIPE = {
    "version": 2,
    "outlier_channels": OUTLIER_CHANNELS,
    "smoothing_alpha": SMOOTHING_ALPHA,
    "calibration_texts": CALIBRATION_TEXTS,
}
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_OPSET = 17
_MS_DOMAIN = "com.microsoft"


def calibration_texts(count: int = CALIBRATION_TEXTS) -> list[str]:
    """``count`` WordNet glosses from the bundled stream, taken at an even stride (the same ones every
    time, so a rebuilt model is the same model)."""
    data = resources.files("rehearsal.data").joinpath("wordnet_stream.jsonl.gz")
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        texts = [json.loads(line)["text"] for line in lines if line.strip()]
    stride = max(1, len(texts) // count)
    return texts[::stride][:count]


def export_fp32(model_path: Path, out: Path) -> None:
    """The transformer of the sentence-transformers model at ``model_path`` as an fp32 ONNX graph whose
    output is the last hidden state (pooling stays in numpy, identical to sentence-transformers')."""
    import torch
    from transformers import AutoModel

    # Eager attention exports to plain MatMul/Softmax; the traced sdpa path carries shape checks.
    model = AutoModel.from_pretrained(str(model_path), attn_implementation="eager").eval()

    class _LastHidden(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, ids: Any, mask: Any, types: Any) -> Any:
            return self.inner(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state

    # A padded row in the example, so the trace keeps the attention mask's arithmetic.
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 3231, 102, 0, 0, 0]])
    mask = (ids != 0).long()
    axes = {name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "last_hidden_state")}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about the mask's shape checks and the position ids' indexing; the padded
        # example above exercises both, and the exported graph matches sentence-transformers to 2e-7.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _LastHidden(model),
            (ids, mask, torch.zeros_like(ids)),
            str(out),
            input_names=list(_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=_OPSET,
            dynamo=False,  # the TorchScript exporter needs no onnxscript and handles BERT as it is
        )


def weight_matmul_inputs(model: Any) -> list[str]:
    """The activations that feed a MatMul by a weight (an initializer), in graph order, each once."""
    weights = {init.name for init in model.graph.initializer}
    seen: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            seen.setdefault(node.input[0], None)
    return list(seen)


def activation_ranges(
    model: Any, texts: Sequence[str], tokenize: Any, *, threads: int = 1, batch_size: int = 32
) -> dict[str, np.ndarray]:
    """Per channel, the largest |value| each weight-MatMul input takes over ``texts`` (real tokens only:
    padding rows are never quantized into a result that matters)."""
    import onnx
    import onnxruntime as ort

    names = weight_matmul_inputs(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ranges: dict[str, np.ndarray] = {}
    for start in range(0, len(texts), batch_size):
        feeds = tokenize(list(texts[start : start + batch_size]))
        real = feeds["attention_mask"].astype(bool)
        for name, value in zip(names, session.run(names, feeds), strict=True):
            peak = np.abs(value[real]).max(axis=0)
            ranges[name] = np.maximum(ranges[name], peak) if name in ranges else peak
    return ranges


def quantize_graph(
    model: Any,
    ranges: dict[str, np.ndarray],
    *,
    outliers: int = OUTLIER_CHANNELS,
    alpha: float = SMOOTHING_ALPHA,
    smooth: bool = True,
) -> Any:
    """``model`` with every weight MatMul rewritten as described at the top (a new ModelProto);
    ``outliers`` input channels per MatMul stay fp32, ``smooth=False`` leaves out the smoothing (the
    benchmark measures each step)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    weights = {init.name: init for init in graph.initializer}
    groups: dict[str, list[Any]] = {}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            groups.setdefault(node.input[0], []).append(node)
    skipped = {id(node) for users in groups.values() for node in users}
    builder = _Builder(graph)
    nodes: list[Any] = []
    for node in graph.node:
        if id(node) not in skipped:
            nodes.append(node)
        elif node is groups[node.input[0]][0]:  # the group's first user: its inputs exist by now
            users = [
                _User(onnx.numpy_helper.to_array(weights[u.input[1]]), u.output[0])
                for u in groups[node.input[0]]
            ]
            peak = ranges[node.input[0]]
            nodes += builder.int8_matmul(node.input[0], users, peak, outliers, alpha if smooth else None)
    for matmuls in groups.values():
        for matmul in matmuls:
            graph.initializer.remove(weights[matmul.input[1]])
    del graph.node[:]
    graph.node.extend(nodes)
    out.opset_import.append(onnx.helper.make_opsetid(_MS_DOMAIN, 1))
    return out


@dataclass(frozen=True)
class _User:
    """One MatMul by a weight: its matrix (in, out) and the tensor its result goes to."""

    matrix: np.ndarray
    output: str


class _Builder:
    """Adds the constants and nodes of int8 MatMuls to one graph, naming each after a counter."""

    def __init__(self, graph: Any) -> None:
        self._graph = graph
        self._count = 0
        self._const("q_one", np.array(1.0, np.float32))
        self._const("q_levels", np.array(127.0, np.float32))
        self._const("q_floor", np.array(1e-8, np.float32))
        self._const("q_zero_point", np.array(128, np.uint8))  # uint8 codes: u8 x s8 is the VNNI path

    def _const(self, name: str, value: np.ndarray) -> str:
        import onnx

        self._graph.initializer.append(onnx.numpy_helper.from_array(value, name))
        return name

    def int8_matmul(
        self, x: str, users: list[_User], peak: np.ndarray, outliers: int, alpha: float | None
    ) -> list[Any]:
        """Nodes computing each user's ``x @ matrix`` into its output from one quantization of
        ``x``; ``peak`` is x's per-channel calibration range."""
        from onnx import helper

        self._count += 1
        p = f"q{self._count}"
        rows = np.max([np.abs(u.matrix).max(axis=1) for u in users], axis=0)
        keep = np.argsort(-peak)[:outliers]
        smooth = np.ones(len(peak), np.float32) if alpha is None else _smoothing(peak, rows, keep, alpha)
        inverse = (1.0 / smooth).astype(np.float32)
        inverse[keep] = 0.0  # those channels go through the fp32 branch below
        self._const(f"{p}_inverse", inverse)
        nodes = [
            helper.make_node("Mul", [x, f"{p}_inverse"], [f"{p}_xs"]),
            helper.make_node("Abs", [f"{p}_xs"], [f"{p}_abs"]),
            helper.make_node("ReduceMax", [f"{p}_abs"], [f"{p}_peak"], axes=[-1], keepdims=1),
            helper.make_node("Max", [f"{p}_peak", "q_floor"], [f"{p}_peak1"]),
            helper.make_node("Div", [f"{p}_peak1", "q_levels"], [f"{p}_step"]),
            helper.make_node("Div", [f"{p}_xs", f"{p}_step"], [f"{p}_xn"]),
            helper.make_node("QuantizeLinear", [f"{p}_xn", "q_one", "q_zero_point"], [f"{p}_xq"]),
        ]
        if outliers:
            # A one-hot (in, k) MatMul picks the channels: ORT's Gather along the last axis costs more.
            pick = np.zeros((len(peak), len(keep)), np.float32)
            pick[keep, np.arange(len(keep))] = 1.0
            self._const(f"{p}_pick", pick)
            nodes.append(helper.make_node("MatMul", [x, f"{p}_pick"], [f"{p}_xo"]))
        for i, user in enumerate(users):
            nodes += self._user_nodes(f"{p}_{i}", p, user, smooth, keep)
        return nodes

    def _user_nodes(self, u: str, p: str, user: _User, smooth: np.ndarray, keep: np.ndarray) -> list[Any]:
        """One user's int8 MatMul of the shared quantized input (the per-token step is its A scale, one
        per row, so the output takes no extra pass), plus its fp32 outlier product. The bias stays in
        the Add after it: MatMulIntegerToFloat's own bias input came out wrong with a per-row scale,
        and carrying it in the fp32 product measured no faster."""
        from onnx import helper

        w = user.matrix.astype(np.float32) * smooth[:, None]
        w[keep] = 0.0
        col_scale = (np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0).astype(np.float32)
        self._const(f"{u}_w", np.clip(np.round(w / col_scale), -127, 127).astype(np.int8))
        self._const(f"{u}_w_scale", col_scale)
        inputs = [f"{p}_xq", f"{u}_w", f"{p}_step", f"{u}_w_scale", "q_zero_point"]
        if not len(keep):
            return [helper.make_node("MatMulIntegerToFloat", inputs, [user.output], domain=_MS_DOMAIN)]
        self._const(f"{u}_outlier_w", user.matrix[keep].astype(np.float32))
        return [
            helper.make_node("MatMulIntegerToFloat", inputs, [f"{u}_yq"], domain=_MS_DOMAIN),
            helper.make_node("MatMul", [f"{p}_xo", f"{u}_outlier_w"], [f"{u}_yo"]),
            helper.make_node("Add", [f"{u}_yq", f"{u}_yo"], [user.output]),
        ]


def _smoothing(peak: np.ndarray, rows: np.ndarray, outliers: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's per-channel factor max|x_j|^a / max|w_j|^(1-a) (``rows``: max|w_j| over every
    matrix that reads x), clipped so no channel is scaled beyond 100x either way; the outlier channels
    (handled in fp32) are left at 1."""
    acts = np.maximum(peak.astype(np.float64), 1e-5)
    weights = np.maximum(rows.astype(np.float64), 1e-5)
    factor = np.clip(acts**alpha / weights ** (1.0 - alpha), 1e-2, 1e2)
    factor[outliers] = 1.0
    return np.asarray(factor, dtype=np.float32)
