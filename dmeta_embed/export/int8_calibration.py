"""What one fp32 pass over the calibration texts says about each MatMul of the per-row int8 graph.

:class:`ActivationStats` gathers, at the input of each row-quantizable MatMul, the per-channel
max |x| and a seeded sample of rows. From them, without building a graph: SmoothQuant-style
factors that move activation outliers into the weights (:func:`smoothing_scales`), the nodes
whose rows can take a fixed zero point (:func:`symmetric_nodes`), and each node's damage when it
alone is quantized (:func:`node_errors`), which orders the weight-format search
(``export.int8_search``). The graph itself is rewritten by ``export.int8_rows``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .int8_rows import MIN_SCALE, is_symmetric, quantize_weight, row_quantizable

if TYPE_CHECKING:
    from pathlib import Path

    import onnx


#: padded tokens per batch of the int8 activation statistics (``Context.feeds``): a batch's
#: taps are held at once (a BERT-base: ~0.2 MB per token), so this bounds that stage's peak; 16
#: texts at max length (6,144 tokens) took the export of real MPNet over 3 GB
FEED_TOKENS = 2048


def token_batches(lengths: np.ndarray, batch_size: int, max_tokens: int) -> list[np.ndarray]:
    """Indices of ``lengths`` in length-sorted batches of at most ``batch_size`` texts and
    ``max_tokens`` padded tokens (a text longer than that alone makes a batch of one)."""
    batches: list[list[int]] = []
    for i in np.argsort(lengths, kind="stable"):
        # ascending lengths: the text joining a batch is its longest
        if not batches or len(batches[-1]) == batch_size or (len(batches[-1]) + 1) * lengths[i] > max_tokens:
            batches.append([])
        batches[-1].append(int(i))
    return [np.array(b) for b in batches]


class ActivationStats:
    """What one fp32 pass over calibration batches saw at the input of each row-quantizable
    MatMul: per-channel max |x| (for smoothing) and a seeded sample of rows (to estimate each
    node's quantization error without building graphs). Padding rows are included: they are
    ordinary tokens to the MatMuls. ``workdir``: the session reads the graph from a file there
    (``graph.ort_session``)."""

    def __init__(
        self,
        model: onnx.ModelProto,
        feeds: Sequence[dict[str, np.ndarray]],
        sample_rows: int = 512,
        nodes: Iterable[str] | None = None,
        workdir: Path | None = None,
    ) -> None:
        import onnx
        from onnx import helper

        from .graph import ort_session

        self.nodes = list(nodes) if nodes is not None else row_quantizable(model)
        by_name = {n.name: n for n in model.graph.node}
        self.input_of = {name: by_name[name].input[0] for name in self.nodes}
        taps = list(dict.fromkeys(self.input_of.values()))
        # the taps become outputs only while the session is built from the serialized graph: no
        # second copy of a (base-size: 440 MB) graph
        outputs = len(model.graph.output)
        for x in taps:
            model.graph.output.append(helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None))
        try:
            sess = ort_session(model, workdir)
        finally:
            del model.graph.output[outputs:]
        self.amax: dict[str, np.ndarray] = {}
        # a few rows from each batch as it comes: every activation of a base-size model over the
        # calibration texts would take gigabytes
        per_batch = -(-sample_rows // max(1, len(feeds)))
        rng = np.random.default_rng(0)
        kept: dict[str, list[np.ndarray]] = {t: [] for t in taps}
        for feed in feeds:
            outs = sess.run(taps, feed)
            picks: dict[int, np.ndarray] = {}  # the same tokens at every tap with as many rows
            for t, v in zip(taps, outs, strict=True):
                rows = v.reshape(-1, v.shape[-1])
                a = np.abs(rows).max(axis=0)
                self.amax[t] = a if t not in self.amax else np.maximum(self.amax[t], a)
                n = len(rows)  # B·L, or B where CLS pooling runs the last layer on token 0 only
                if n not in picks:
                    picks[n] = np.sort(rng.choice(n, size=min(per_batch, n), replace=False))
                kept[t].append(rows[picks[n]].copy())
        self.rows = {t: np.concatenate(parts) for t, parts in kept.items()}

    def x_amax(self, node: str) -> np.ndarray:
        return self.amax[self.input_of[node]]

    def x_rows(self, node: str) -> np.ndarray:
        return self.rows[self.input_of[node]]


def smoothing_scales(
    model: onnx.ModelProto, stats: ActivationStats, alpha: float = 0.5
) -> dict[str, np.ndarray]:
    """SmoothQuant factors ``s_k = max|x_k|^alpha / max|W_k|^(1-alpha)`` per input channel of each
    node of ``stats``, from the activations the fp32 ``model`` saw there."""
    from onnx import numpy_helper

    by_name = {n.name: n for n in model.graph.node}
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for name in stats.nodes:
        w_amax = np.abs(numpy_helper.to_array(inits[by_name[name].input[1]])).max(axis=1)
        x_amax = np.maximum(stats.x_amax(name), 1e-5)
        s = x_amax**alpha / np.maximum(w_amax, 1e-5) ** (1 - alpha)
        out[name] = np.clip(s, 1e-2, 1e2).astype(np.float32)
    return out


def symmetric_nodes(stats: ActivationStats, smooth: dict[str, np.ndarray] | None = None) -> list[str]:
    """The nodes whose input rows are about as negative as positive (LayerNorm outputs, attention
    context): a fixed zero point costs them almost nothing and saves the asymmetric rows' int32
    correction and two output passes. One-sided inputs (GELU and ReLU outputs: min ≈ -0.17 against
    a max of several units) keep asymmetric rows, which give them the 8th bit."""
    out = []
    smooth = smooth or {}
    for name in stats.nodes:
        x = stats.x_rows(name)
        s = smooth.get(name)
        if s is not None:
            x = x / s
        lo, hi = -np.minimum(x.min(axis=1), 0.0), np.maximum(x.max(axis=1), 0.0)
        if float(np.median(np.minimum(lo, hi) / np.maximum(np.maximum(lo, hi), MIN_SCALE))) >= 0.5:
            out.append(name)
    return out


def fake_rows(x: np.ndarray, symmetric: bool = False) -> np.ndarray:
    """Rows of ``x`` [R, K] quantized as the graph quantizes them (u8 per row), dequantized."""
    if symmetric:
        s = np.maximum(np.abs(x).max(axis=1, keepdims=True) / 127.0, MIN_SCALE)
        return np.clip(np.rint(x / s), -127, 127) * s
    lo = np.minimum(x.min(axis=1, keepdims=True), 0.0)
    hi = np.maximum(x.max(axis=1, keepdims=True), 0.0)
    s = np.maximum((hi - lo) / 255.0, MIN_SCALE)
    zp = np.clip(np.rint(-lo / s), 0, 255)
    return (np.clip(np.rint(x / s) + zp, 0, 255) - zp) * s


def fake_weight(w: np.ndarray, fmt: str) -> np.ndarray:
    wq, scale, zp = quantize_weight(w, fmt)
    return (wq.astype(np.float32) - zp.astype(np.float32)) * scale


def node_errors(
    model: onnx.ModelProto,
    stats: ActivationStats,
    fmt: str,
    smooth: dict[str, np.ndarray] | None = None,
    symmetric: bool | Collection[str] = False,
) -> dict[str, float]:
    """Each node's output error with only it quantized (``fmt`` weights, per-row activations), on
    the sampled rows: the 99th percentile over rows of |y_q - y| / |y|, so the rows that go wrong
    (a repeated token, an outlier) rank a node, not the average row. Numpy, no graph built."""
    from onnx import numpy_helper

    by_name = {n.name: n for n in model.graph.node}
    inits = {i.name: i for i in model.graph.initializer}
    smooth = smooth or {}
    out = {}
    for name in stats.nodes:
        w = numpy_helper.to_array(inits[by_name[name].input[1]]).astype(np.float32)
        x = stats.x_rows(name).astype(np.float32)
        y = x @ w
        s = smooth.get(name)
        if s is not None:
            x, w = x / s, w * s[:, None]
        yq = fake_rows(x, is_symmetric(symmetric, name)).astype(np.float32) @ fake_weight(w, fmt)
        err = np.linalg.norm(yq - y, axis=1) / np.maximum(np.linalg.norm(y, axis=1), 1e-12)
        out[name] = float(np.percentile(err, 99))
    return out
