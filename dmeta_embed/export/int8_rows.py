"""int8 with per-row (per-token) dynamic activation scales, as a rewrite of the fp32 graph.

onnxruntime's ``quantize_dynamic`` gives each MatMul input *one* scale for the whole batch
(DynamicQuantizeLinear): padding and the other texts of a batch set a text's scale, so its vector
depends on its batch, and one outlier token flattens every other token's resolution. Here each
row of a MatMul's input (one token) is quantized on its own, asymmetric u8 from that row's
min/max, so a token's integers depend on that token only.

onnxruntime's CPU ``MatMulInteger`` takes only a scalar A zero point, so the per-row zero point
is subtracted after the integer product, exactly, in int32::

    (xq - za[m]) · (wq - zb) = xq · (wq - zb) - za[m] · colsum(wq - zb)

Weights are per-output-channel symmetric s8 with an explicit int8 zero point, so every INT8
tensor is a ``MatMulInteger`` weight or its zero point: the runtime's s8 → u8 shift on CPUs
whose u8×s8 kernels saturate (``runtime.int8``) keeps ``wq - zb`` and therefore ``colsum`` and the
result exact. ``colsum`` is stored as int32, which the shift leaves alone.

The fused ``Attention`` computes its QKV projection inside one op; :func:`unfuse_attention`
splits it into a MatMul (quantized per row like the rest) feeding ``MultiHeadAttention``.
:func:`smoothing_scales` measures SmoothQuant-style per-input-channel factors that move
activation outliers into the weights before the per-row quantization.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

#: smallest per-row scale: an all-zero row quantizes to its zero point instead of dividing by 0
MIN_SCALE = 1e-12


def unfuse_attention(model: onnx.ModelProto) -> int:
    """Replace each fused ``Attention`` by ``MatMul`` (QKV, named ``<attention>/qkv``) →
    ``Split`` → ``MultiHeadAttention`` with the same bias, mask and heads, in place.

    The mask index (1-D lengths or a 2-D 0/1 mask) is ``MultiHeadAttention``'s
    ``key_padding_mask``, and an additive ``attention_bias`` (MPNet's relative positions, from
    ``export.relative_attention``) its ``attention_bias``. Returns how many nodes were replaced;
    Attention nodes beyond that pattern (past state, unidirectional, QKV hidden sizes) stay fused."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes = []
    replaced = 0
    for n in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        simple = (
            n.op_type == "Attention"
            and n.domain == "com.microsoft"
            and 3 <= len(n.input) <= 6
            and (len(n.input) < 5 or n.input[4] == "")  # no past state
            and n.input[1] in inits
            and set(attrs) <= {"num_heads", "mask_filter_value", "scale"}
            and len(n.output) == 1
        )
        if not simple:
            nodes.append(n)
            continue
        w = numpy_helper.to_array(inits[n.input[1]])
        hidden = w.shape[1] // 3
        qkv, split = f"{n.name}/qkv", f"{n.name}/split"
        sizes = f"{n.name}/split_sizes"
        g.initializer.append(numpy_helper.from_array(np.array([hidden] * 3, np.int64), sizes))
        nodes.append(helper.make_node("MatMul", [n.input[0], n.input[1]], [qkv], name=qkv))
        parts = [f"{split}_{p}" for p in "qkv"]
        nodes.append(helper.make_node("Split", [qkv, sizes], parts, name=split, axis=-1))
        mask = n.input[3] if len(n.input) > 3 else ""
        attention_bias = n.input[5] if len(n.input) > 5 else ""
        mha_attrs = {k: v for k, v in attrs.items() if k in ("num_heads", "mask_filter_value", "scale")}
        extra = [attention_bias] if attention_bias else []
        nodes.append(
            helper.make_node(
                "MultiHeadAttention",
                [*parts, n.input[2], mask, *extra],
                [n.output[0]],
                name=f"{n.name}/mha",
                domain="com.microsoft",
                **mha_attrs,
            )
        )
        replaced += 1
    del g.node[:]
    g.node.extend(nodes)
    return replaced


def row_quantizable(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes with a constant 2-D weight, in graph order: what :func:`quantize_rows` rewrites."""
    inits = {i.name: i for i in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2
    ]


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel (column) symmetric s8: ``(wq [K, N] int8, scale [N] float32)``.
    Range ±127 (not -128), so the u8 shift and the kernels see a symmetric range."""
    amax = np.abs(w).max(axis=0).astype(np.float32)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    wq = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return wq, scale


def quantize_rows(
    model: onnx.ModelProto,
    exclude: Iterable[str] = (),
    *,
    smooth: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """A copy of ``model`` with every :func:`row_quantizable` MatMul not in ``exclude`` computed
    in int8 with per-row activation scales. ``smooth``: per-input-channel factors ``s`` by node
    name (from :func:`smoothing_scales`): that node computes ``(x / s) · (s · W)``."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    targets = set(row_quantizable(m)) - set(exclude)
    smooth = smooth or {}
    consts = _Consts(g)
    nodes: list[onnx.NodeProto] = []
    for n in g.node:
        if n.name in targets:
            w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            nodes += _row_matmul(n.name, n.input[0], n.output[0], w, smooth.get(n.name), consts)
        else:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    # drop the float weights nothing reads any more
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return m


class _Consts:
    """Initializers added to a graph once by name (shared scalars are shared)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.names: set[str] = set()

    def __call__(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        if name not in self.names:
            self.graph.initializer.append(numpy_helper.from_array(value, name))
            self.names.add(name)
        return name


def _row_matmul(
    p: str, x: str, y: str, w: np.ndarray, smooth: np.ndarray | None, const: _Consts
) -> list[onnx.NodeProto]:
    """The nodes computing ``y = x @ w`` with per-row u8 ``x`` and per-column s8 ``w``."""
    from onnx import TensorProto, helper

    k, cols = w.shape
    if smooth is not None:
        w = w * smooth[:, None].astype(np.float32)
    wq, w_scale = quantize_weight(w)
    colsum = wq.astype(np.int32).sum(axis=0, dtype=np.int32)  # of wq - zb, with zb = 0
    zero = const("rows/zero", np.array(0.0, np.float32))
    q_max = const("rows/255", np.array(255.0, np.float32))
    axis1 = const("rows/axis1", np.array([1], np.int64))
    out: list[onnx.NodeProto] = []

    def node(op: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        name = f"{p}/rows/{name}"
        out.append(helper.make_node(op, list(inputs), [name], name=name, **attrs))
        return name

    x2 = node("Reshape", [x, const(f"rows/shape_{k}", np.array([-1, k], np.int64))], "x2")
    if smooth is not None:
        x2 = node("Mul", [x2, const(f"{p}/inv_smooth", (1.0 / smooth).astype(np.float32))], "x2s")
    # the row's range always includes 0, so 0 (padding, ReLU-like zeros) is exact
    lo = node("Min", [node("ReduceMin", [x2], "min", axes=[1], keepdims=0), zero], "lo")
    hi = node("Max", [node("ReduceMax", [x2], "max", axes=[1], keepdims=0), zero], "hi")
    span = node("Div", [node("Sub", [hi, lo], "span"), q_max], "raw_scale")
    scale = node("Max", [span, const("rows/min_scale", np.array(MIN_SCALE, np.float32))], "scale")
    zp_r = node("Round", [node("Div", [node("Neg", [lo], "neg_lo"), scale], "zp_raw")], "zp_r")
    zp = node("Cast", [node("Clip", [zp_r, zero, q_max], "zp_f")], "zp", to=TensorProto.UINT8)
    xq = node("QuantizeLinear", [x2, scale, zp], "xq", axis=0)
    acc = node(
        "MatMulInteger", [xq, const(f"{p}/wq", wq), "", const(f"{p}/wzp", np.zeros(cols, np.int8))], "acc"
    )
    # onnxruntime's MatMulInteger takes a scalar A zero point only: subtract za[m]·colsum in int32
    zp_col = node("Unsqueeze", [node("Cast", [zp], "zp_i", to=TensorProto.INT32), axis1], "zp_col")
    corr = node("Mul", [zp_col, const(f"{p}/colsum", colsum[None, :])], "corr")
    exact = node("Cast", [node("Sub", [acc, corr], "exact")], "acc_f", to=TensorProto.FLOAT)
    y_w = node("Mul", [exact, const(f"{p}/w_scale", w_scale)], "y_w")
    y2 = node("Mul", [y_w, node("Unsqueeze", [scale, axis1], "scale_col")], "y2")
    lead = node("Shape", [x], "lead", end=-1)
    shape = node("Concat", [lead, const(f"{p}/cols", np.array([cols], np.int64))], "shape", axis=0)
    out.append(helper.make_node("Reshape", [y2, shape], [y], name=f"{p}/rows/out"))
    return out


def smoothing_scales(
    model: onnx.ModelProto,
    feeds: Iterable[dict[str, np.ndarray]],
    alpha: float = 0.5,
    nodes: Iterable[str] | None = None,
) -> dict[str, np.ndarray]:
    """SmoothQuant factors ``s_k = max|x_k|^alpha / max|W_k|^(1-alpha)`` per input channel of each
    row-quantizable MatMul (or of ``nodes``), from the activations the fp32 ``model`` sees on
    ``feeds`` (input dicts, e.g. calibration batches). Padding rows are included: they are
    ordinary tokens to the MatMuls."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    names = list(nodes) if nodes is not None else row_quantizable(model)
    by_name = {n.name: n for n in model.graph.node}
    inits = {i.name: i for i in model.graph.initializer}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    taps = []
    for name in names:
        x = by_name[name].input[0]
        if x not in taps:
            taps.append(x)
            probe.graph.output.append(helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    amax: dict[str, np.ndarray] = {}
    for feed in feeds:
        outs = sess.run(taps, feed)
        for t, v in zip(taps, outs, strict=True):
            a = np.abs(v.reshape(-1, v.shape[-1])).max(axis=0)
            amax[t] = a if t not in amax else np.maximum(amax[t], a)
    out = {}
    for name in names:
        n = by_name[name]
        w_amax = np.abs(numpy_helper.to_array(inits[n.input[1]])).max(axis=1)
        x_amax = np.maximum(amax[n.input[0]], 1e-5)
        s = x_amax**alpha / np.maximum(w_amax, 1e-5) ** (1 - alpha)
        out[name] = np.clip(s, 1e-2, 1e2).astype(np.float32)
    return out
