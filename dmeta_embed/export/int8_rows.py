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

from collections.abc import Collection, Iterable, Sequence
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


#: a format suffix (``"u8/asym"``): that node's rows asymmetric, whatever ``symmetric`` says
ASYMMETRIC = "asym"
#: a format suffix (``"s8/a7"``): asymmetric rows in 7 bits (0..127), so u8·s8 pair sums stay
#: below 2**15 (2·127·127) with 8-bit weights: no saturation on any CPU, the fast u8×s8 kernels
SEVEN_BIT_ROWS = "a7"

#: how one MatMul's weights are stored, per output channel, symmetric:
#: ``s8``: int8 in ±127, exact where u8×s8 kernels accumulate in int32 (VNNI, AMX, arm64); the
#: runtime shifts it to u8 where they saturate (x86 without VNNI), exact but on slower kernels;
#: ``s7``: int8 in ±63, whose u8·s7 pair sums (≤ 2·255·63 < 2**15) never saturate: exact and on
#: the fast u8×s8 kernels on every CPU, one bit less of weight resolution;
#: ``u8``: 8-bit stored unsigned with zero point 128: u8×u8 kernels, exact on every CPU.
WEIGHT_FORMATS = ("s8", "s7", "u8")


def quantize_weight(w: np.ndarray, fmt: str = "s8") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-output-channel (column) symmetric ints in ``fmt`` (:data:`WEIGHT_FORMATS`):
    ``(wq [K, N], scale [N] float32, zero point [N])``, int8 for ``s8``/``s7`` (zero point 0),
    uint8 for ``u8`` (zero point 128). Never -128: the u8 shift and the kernels see a symmetric range."""
    if fmt not in WEIGHT_FORMATS:
        raise ValueError(f"unknown int8 weight format {fmt!r} (one of {', '.join(WEIGHT_FORMATS)})")
    q = 63.0 if fmt == "s7" else 127.0
    amax = np.abs(w).max(axis=0).astype(np.float32)
    scale = np.where(amax > 0, amax / q, 1.0).astype(np.float32)
    wq = np.clip(np.rint(w / scale), -q, q).astype(np.int8)
    cols = w.shape[1]
    if fmt == "u8":
        return (wq.astype(np.int16) + 128).astype(np.uint8), scale, np.full(cols, 128, np.uint8)
    return wq, scale, np.zeros(cols, np.int8)


def quantize_rows(
    model: onnx.ModelProto,
    exclude: Iterable[str] = (),
    *,
    smooth: dict[str, np.ndarray] | None = None,
    weights: str = "s8",
    formats: dict[str, str] | None = None,
    symmetric: bool | Collection[str] = False,
    activation_bits: int = 8,
) -> onnx.ModelProto:
    """A copy of ``model`` with every :func:`row_quantizable` MatMul not in ``exclude`` computed
    in int8 with per-row activation scales. ``smooth``: per-input-channel factors ``s`` by node
    name (from :func:`smoothing_scales`): that node computes ``(x / s) · (s · W)``. ``weights``:
    the weight format (:data:`WEIGHT_FORMATS`) of every node ``formats`` does not name
    (``"fp32"`` there keeps that node float, a ``/asym`` suffix gives it asymmetric rows, ``/a7``
    asymmetric 7-bit rows). ``symmetric`` (True, or the nodes it applies to,
    as :func:`symmetric_nodes` picks them): rows quantized around a fixed zero
    point (no int32 correction; half the resolution for one-sided rows). ``activation_bits``: 7
    keeps u8×s8 pair sums in range with 8-bit weights (asymmetric rows only)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    formats = dict(formats or {})
    targets = set(row_quantizable(m)) - set(exclude) - {k for k, v in formats.items() if v == "fp32"}
    smooth = smooth or {}
    consts = _Consts(g)
    nodes: list[onnx.NodeProto] = []
    for n in g.node:
        if n.name in targets:
            w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            fmt, _, rows = formats.get(n.name, weights).partition("/")
            sym = _symmetric(symmetric, n.name)
            bits = 7 if rows == SEVEN_BIT_ROWS else activation_bits
            if sym and not rows:
                nodes += _row_matmul_symmetric(
                    n.name, n.input[0], n.output[0], w, smooth.get(n.name), consts, fmt
                )
            else:
                nodes += _row_matmul(
                    n.name, n.input[0], n.output[0], w, smooth.get(n.name), consts, fmt, bits
                )
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


def _symmetric(symmetric: bool | Collection[str], node: str) -> bool:
    """Whether ``node``'s rows get a fixed zero point (``symmetric``: all, none, or these nodes)."""
    return symmetric if isinstance(symmetric, bool) else node in symmetric


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
    p: str,
    x: str,
    y: str,
    w: np.ndarray,
    smooth: np.ndarray | None,
    const: _Consts,
    fmt: str = "s8",
    activation_bits: int = 8,
) -> list[onnx.NodeProto]:
    """The nodes computing ``y = x @ w`` with per-row u8 ``x`` and per-column int ``w`` (``fmt``)."""
    from onnx import TensorProto, helper

    k, cols = w.shape
    if smooth is not None:
        w = w * smooth[:, None].astype(np.float32)
    wq, w_scale, w_zp = quantize_weight(w, fmt)
    colsum = (wq.astype(np.int32) - w_zp.astype(np.int32)).sum(axis=0, dtype=np.int32)  # of wq - zb
    zero = const("rows/zero", np.array(0.0, np.float32))
    top = 2**activation_bits - 1
    q_max = const(f"rows/{top}", np.array(float(top), np.float32))
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
    acc = node("MatMulInteger", [xq, const(f"{p}/wq", wq), "", const(f"{p}/wzp", w_zp)], "acc")
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


def _row_matmul_symmetric(
    p: str, x: str, y: str, w: np.ndarray, smooth: np.ndarray | None, const: _Consts, fmt: str = "s8"
) -> list[onnx.NodeProto]:
    """``y = x @ w`` with per-row *symmetric* u8 ``x`` (zero point 128 for every row, scale
    ``max|x_row| / 127``) and per-column s8 ``w``: the zero point is one scalar, so onnxruntime's
    ``MatMulIntegerToFloat`` applies the weight scales in its GEMM's epilogue and one ``Mul``
    applies the row scales; no int32 correction pass."""
    from onnx import TensorProto, helper

    k, cols = w.shape
    if smooth is not None:
        w = w * smooth[:, None].astype(np.float32)
    wq, w_scale, w_zp = quantize_weight(w, fmt)
    out: list[onnx.NodeProto] = []

    def node(op: str, inputs: Sequence[str], name: str, domain: str = "", **attrs: Any) -> str:
        name = f"{p}/rows/{name}"
        out.append(helper.make_node(op, list(inputs), [name], name=name, domain=domain, **attrs))
        return name

    x2 = node("Reshape", [x, const(f"rows/shape_{k}", np.array([-1, k], np.int64))], "x2")
    if smooth is not None:
        x2 = node("Mul", [x2, const(f"{p}/inv_smooth", (1.0 / smooth).astype(np.float32))], "x2s")
    hi = node("ReduceMax", [x2], "max", axes=[1], keepdims=0)
    lo = node("ReduceMin", [x2], "min", axes=[1], keepdims=0)
    amax = node("Max", [hi, node("Neg", [lo], "neg_lo")], "amax")
    scale = node(
        "Max",
        [
            node("Div", [amax, const("rows/127", np.array(127.0, np.float32))], "raw_scale"),
            const("rows/min_scale", np.array(MIN_SCALE, np.float32)),
        ],
        "scale",
    )
    # QuantizeLinear per axis wants one zero point per row: 128 for all, built from the scale's shape
    zp = node(
        "Cast",
        [
            node(
                "Add",
                [
                    node("Mul", [scale, const("rows/zero", np.array(0.0, np.float32))], "zeros"),
                    const("rows/128f", np.array(128.0, np.float32)),
                ],
                "zp_f",
            )
        ],
        "zp",
        to=TensorProto.UINT8,
    )
    xq = node("QuantizeLinear", [x2, scale, zp], "xq", axis=0)
    y_w = node(
        "MatMulIntegerToFloat",
        [
            xq,
            const(f"{p}/wq", wq),
            const("rows/one", np.array(1.0, np.float32)),
            const(f"{p}/w_scale", w_scale),
            const("rows/128", np.array(128, np.uint8)),
            const(f"rows/wzp_{fmt}", w_zp[:1].reshape(())),
        ],
        "y_w",
        domain="com.microsoft",
    )
    y2 = node(
        "Mul",
        [y_w, node("Unsqueeze", [scale, const("rows/axis1", np.array([1], np.int64))], "scale_col")],
        "y2",
    )
    lead = node("Shape", [x], "lead", end=-1)
    shape = node("Concat", [lead, const(f"{p}/cols", np.array([cols], np.int64))], "shape", axis=0)
    out.append(helper.make_node("Reshape", [y2, shape], [y], name=f"{p}/rows/out"))
    return out


class ActivationStats:
    """What one fp32 pass over calibration batches saw at the input of each row-quantizable
    MatMul: per-channel max |x| (for smoothing) and a seeded sample of rows (to estimate each
    node's quantization error without building graphs). Padding rows are included: they are
    ordinary tokens to the MatMuls."""

    def __init__(
        self,
        model: onnx.ModelProto,
        feeds: Sequence[dict[str, np.ndarray]],
        sample_rows: int = 512,
        nodes: Iterable[str] | None = None,
    ) -> None:
        import onnx
        import onnxruntime as ort
        from onnx import helper

        self.nodes = list(nodes) if nodes is not None else row_quantizable(model)
        by_name = {n.name: n for n in model.graph.node}
        self.input_of = {name: by_name[name].input[0] for name in self.nodes}
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        taps = list(dict.fromkeys(self.input_of.values()))
        for x in taps:
            probe.graph.output.append(helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None))
        sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        self.amax: dict[str, np.ndarray] = {}
        # a few rows from each batch as it comes: every activation of a base-size model over the
        # calibration texts would be ~1.5 GB
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
    model: onnx.ModelProto,
    feeds: Sequence[dict[str, np.ndarray]] | None = None,
    alpha: float = 0.5,
    nodes: Iterable[str] | None = None,
    *,
    stats: ActivationStats | None = None,
) -> dict[str, np.ndarray]:
    """SmoothQuant factors ``s_k = max|x_k|^alpha / max|W_k|^(1-alpha)`` per input channel of each
    row-quantizable MatMul (or of ``nodes``), from the activations the fp32 ``model`` sees on
    ``feeds`` (input dicts, e.g. calibration batches), or from ``stats`` already gathered."""
    from onnx import numpy_helper

    if stats is None:
        if feeds is None:
            raise ValueError("smoothing_scales needs feeds or stats")
        stats = ActivationStats(model, feeds, sample_rows=1, nodes=nodes)
    by_name = {n.name: n for n in model.graph.node}
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for name in list(nodes) if nodes is not None else stats.nodes:
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
        yq = fake_rows(x, _symmetric(symmetric, name)).astype(np.float32) @ fake_weight(w, fmt)
        err = np.linalg.norm(yq - y, axis=1) / np.maximum(np.linalg.norm(y, axis=1), 1e-12)
        out[name] = float(np.percentile(err, 99))
    return out
