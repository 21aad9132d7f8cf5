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

The int8 builder (``builders.int8``) first splits the fused ``Attention`` so its QKV projection is
a MatMul rewritten here too (``export.attention_split``), and takes the smoothing factors and the
nodes with symmetric rows from the calibration activations (``export.int8_calibration``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

#: smallest per-row scale: an all-zero row quantizes to its zero point instead of dividing by 0
MIN_SCALE = 1e-12


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
) -> onnx.ModelProto:
    """A copy of ``model`` with every :func:`row_quantizable` MatMul not in ``exclude`` computed
    in int8 with per-row activation scales. ``smooth``: per-input-channel factors ``s`` by node
    name (from ``int8_calibration.smoothing_scales``): that node computes ``(x / s) · (s · W)``.
    ``weights``: the format of every node ``formats`` does not name, and each value of
    ``formats``: a weight format (:data:`WEIGHT_FORMATS`), ``"fp32"`` (that node stays float), or
    a weight format with a rows suffix: ``/asym`` (asymmetric rows), ``/a7`` (asymmetric 7-bit
    rows, so u8×s8 pair sums stay in range with 8-bit weights). ``symmetric`` (True, or the nodes
    it applies to, as ``int8_calibration.symmetric_nodes`` picks them): rows without a suffix
    quantized around a fixed zero point (no int32 correction; half the resolution for one-sided
    rows)."""
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
            bits = 7 if rows == SEVEN_BIT_ROWS else 8
            if is_symmetric(symmetric, n.name) and not rows:
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


def is_symmetric(symmetric: bool | Collection[str], node: str) -> bool:
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
