"""Derive variants from the fused fp32 backbone: fp16, and the checks and calibration target the
int8 builders share (``builders.int8``: per-row int8, ``export.int8_rows``; ``builders.int8_ov``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..manifest import Bar

if TYPE_CHECKING:
    import onnx


def to_fp16(backbone: onnx.ModelProto, *, copy: bool = True) -> onnx.ModelProto:
    """fp16 weights and compute; int64 inputs and the fp32 hidden-state output are kept, so the
    pooling/normalisation head appended afterwards runs in fp32. LayerNorm-type fused ops
    accumulate in fp32 inside ONNX Runtime's kernels. On a copy, or with ``copy=False`` on
    ``backbone`` itself (a graph loaded for this)."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    m = backbone
    if copy:
        m = onnx.ModelProto()
        m.CopyFrom(backbone)
    om = OnnxModel(m)
    om.convert_float_to_float16(use_symbolic_shape_infer=True, keep_io_types=True)
    return om.model


#: int8 ops and the input positions of their weight and its zero point
INT8_WEIGHT_INPUTS = {
    "MatMulInteger": (1, 3),
    "DynamicQuantizeMatMul": (1, 3),
    "MatMulIntegerToFloat": (1, 5),
    "QAttention": (1, 7),
}


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


def target(bar: Bar, margin: float = 0.7) -> Bar:
    """A stricter bar for the calibration texts, so the probe set (the real test) passes: each
    cosine's allowed loss times ``margin``."""
    return Bar(min_cos=1 - (1 - bar.min_cos) * margin, mean_cos=1 - (1 - bar.mean_cos) * margin)
