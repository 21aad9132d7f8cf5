"""Derive the fp16 and int8 variants from the fused fp32 backbone.

int8 is dynamic quantization with per-channel signed weights, MatMul and Attention only (the
embedding tables stay fp32). Plain int8 misses the fidelity bar on real weights, so
:func:`search_int8` measures each quantizable node's sensitivity end to end and keeps the fewest
most-sensitive nodes in fp32 that reach the bar.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..manifest import Bar
from .reference import cosines

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

QUANTIZABLE = ("MatMul", "Attention")


def to_fp16(backbone: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and compute; int64 inputs and the fp32 hidden-state output are kept, so the
    pooling/normalisation head appended afterwards runs in fp32. LayerNorm-type fused ops
    accumulate in fp32 inside ONNX Runtime's kernels."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    m = onnx.ModelProto()
    m.CopyFrom(backbone)
    om = OnnxModel(m)
    om.convert_float_to_float16(use_symbolic_shape_infer=True, keep_io_types=True)
    return om.model


def quantizable_nodes(backbone: onnx.ModelProto) -> list[str]:
    """MatMul nodes with a constant weight, and fused Attention nodes, in graph order."""
    inits = {i.name for i in backbone.graph.initializer}
    return [
        n.name
        for n in backbone.graph.node
        if n.op_type == "Attention" or (n.op_type == "MatMul" and n.input[1] in inits)
    ]


def quantize_int8(backbone: onnx.ModelProto, exclude: list[str], workdir: Path) -> onnx.ModelProto:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = workdir / "q.onnx"
    quantize_dynamic(
        backbone,
        out,
        op_types_to_quantize=list(QUANTIZABLE),
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
        # the fused graph lacks value_info for some weights; without this quantize_dynamic fails
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
    )
    return onnx.load(str(out))


@dataclass
class Int8Result:
    model: onnx.ModelProto
    #: nodes left in fp32, each with its measured sensitivity
    kept_float: dict[str, str]
    #: quantize-and-measure trials the search ran
    trials: int = 0


#: int8 ops and the input positions of their weight and its zero point
INT8_WEIGHT_INPUTS = {"MatMulInteger": (1, 3), "DynamicQuantizeMatMul": (1, 3), "QAttention": (1, 7)}


def check_int8_tensors(model: onnx.ModelProto) -> int:
    """How many INT8 tensors ``model`` holds, after checking that each one is the weight or the
    weight zero point of an int8 op, and that every such weight has its zero point: what the
    runtime's s8 → u8 shift (``runtime.int8``) relies on."""
    import onnx

    int8 = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    used: set[str] = set()
    for n in model.graph.node:
        positions = INT8_WEIGHT_INPUTS.get(n.op_type)
        if positions is None:
            continue
        w, z = (n.input[i] if i < len(n.input) else "" for i in positions)
        if w in int8:
            if z not in int8:
                raise ValueError(
                    f"int8 node {n.name} has no int8 weight zero point: the u8 shift would be wrong"
                )
            used |= {w, z}
    stray = int8 - used
    if stray:
        raise ValueError(f"int8 tensors that are no int8 op's weight or zero point: {sorted(stray)[:3]}")
    return len(int8)


def target(bar: Bar) -> Bar:
    """A stricter bar for the calibration texts, so the probe set (the real test) passes."""
    return Bar(min_cos=1 - (1 - bar.min_cos) * 0.7, mean_cos=1 - (1 - bar.mean_cos) * 0.7)


def search_int8(
    backbone: onnx.ModelProto,
    evaluate: Callable[[onnx.ModelProto], np.ndarray],
    reference: np.ndarray,
    bar: Bar,
) -> Int8Result:
    """Quantize, keeping the fewest most-sensitive nodes in fp32 that reach ``bar`` (with margin)
    on the calibration texts ``evaluate`` embeds. ``reference``: fp32 embeddings of those texts."""
    goal = target(bar)
    nodes = quantizable_nodes(backbone)
    trials = 0

    def score(m: onnx.ModelProto) -> np.ndarray:
        nonlocal trials
        trials += 1
        return cosines(evaluate(m), reference)

    def ok(c: np.ndarray) -> bool:
        return float(c.min()) >= goal.min_cos and float(c.mean()) >= goal.mean_cos

    with tempfile.TemporaryDirectory(prefix="dmeta-int8-") as tmp:
        work = Path(tmp)
        full = quantize_int8(backbone, [], work)
        c = score(full)
        log.info(
            "int8, all %d nodes quantized: min cos %.5f mean %.5f (target %.5f / %.5f)",
            len(nodes),
            c.min(),
            c.mean(),
            goal.min_cos,
            goal.mean_cos,
        )
        if ok(c):
            return Int8Result(full, {}, trials)
        log.info("int8: measuring each node's sensitivity (%d trials)", len(nodes))

        # sensitivity: quantize one node at a time, measure the end-to-end damage
        sens: dict[str, float] = {}
        for i, name in enumerate(nodes):
            only = quantize_int8(backbone, [n for n in nodes if n != name], work)
            sens[name] = float(1.0 - score(only).mean())
            if (i + 1) % 8 == 0 or i + 1 == len(nodes):
                log.info("int8: sensitivity %d/%d nodes", i + 1, len(nodes))
        ranked = sorted(nodes, key=lambda n: -sens[n])

        def with_top(k: int) -> tuple[onnx.ModelProto, bool]:
            m = quantize_int8(backbone, ranked[:k], work)
            c = score(m)
            log.info("int8: %d most sensitive nodes kept fp32: min cos %.5f mean %.5f", k, c.min(), c.mean())
            return m, ok(c)

        # doubling, then bisection, for the smallest k that passes (damage is ~additive in k)
        lo, hi, best = 0, 1, None
        while hi < len(nodes):
            m, passed = with_top(hi)
            if passed:
                best = (hi, m)
                break
            lo, hi = hi, hi * 2
        if best is None:
            hi = len(nodes)
            best = (hi, backbone)  # everything fp32: trivially passes
        while hi - lo > 1:
            mid = (lo + hi) // 2
            m, passed = with_top(mid)
            if passed:
                hi, best = mid, (mid, m)
            else:
                lo = mid
        k, model = best
        kept = {
            n: f"sensitivity {sens[n]:.2e} (rank {i + 1} of {len(nodes)})" for i, n in enumerate(ranked[:k])
        }
        log.info("int8: kept %d of %d nodes in fp32 after %d trials", k, len(nodes), trials)
        return Int8Result(model, kept, trials)
