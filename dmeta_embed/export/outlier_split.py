"""Outlier channels of a MatMul moved to a float side path before static int8 (LLM.int8()-style),
so a handful of huge channels no longer set the int8 scales of everything else.

Real weights need it twice (figures: docs/export.md, "int8-ov on MPNet"): the FFN output
projections' weights hold a few input rows far above the median row, so per-output-channel int8
weights lose most of every column such a row touches (int8 weights alone miss the bar); and the
LayerNorm outputs feeding the MatMuls carry a few channels far above the rest, so one per-tensor
static activation scale flattens the others (every activation static leaves almost nothing of the
vectors). With those channels split out, int8 weights alone meet the bar and static activations
come much closer to it (the search then keeps the sensitive roles float as usual).

``x @ W`` becomes ``(x * mask) @ W_rest + x[..., idx] @ W[idx]``: ``mask`` zeroes the outlier
channels (so the activation quantizer of the main MatMul never sees them), ``W_rest`` is ``W``
with those rows zeroed (so its per-column weight scales ignore them), and the side MatMul over the
``idx`` channels stays float (NNCF is told to ignore it: ``IGNORED_PATTERN``). In fp32 the rewrite
is exact up to summation order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

    import onnx

    from ..runtime.tokenize import Tokenized

#: a channel is an outlier when its calibration |activation| max, or its weight row's |w| max, is
#: more than this many times the median channel's
RATIO = 8.0
#: at most this many channels per MatMul go to the float side path (the largest ones): the side
#: MatMul stays a small fraction of the main one's work
MAX_CHANNELS = 16
#: node names the rewrite adds for the float side path; NNCF's ignored scope (``re`` pattern)
IGNORED_PATTERN = ".*/Outlier(Gather|MatMul|Add)$"


def _weight_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    from onnx import numpy_helper

    init = {i.name: i for i in model.graph.initializer}
    return [
        n
        for n in model.graph.node
        if n.op_type == "MatMul" and n.input[1] in init and numpy_helper.to_array(init[n.input[1]]).ndim == 2
    ]


def activation_absmax(
    model: onnx.ModelProto, calib: Tokenized, workdir: Path | None = None
) -> dict[str, np.ndarray]:
    """Per-channel max |x| of every weight MatMul's input over the calibration texts (fp32,
    onnxruntime, one text at a time so padding never enters the statistics). ``workdir``: the
    session reads the graph from a file there (``graph.ort_session``)."""
    import onnx
    import onnxruntime as ort

    from .graph import ort_session

    inputs = sorted({n.input[0] for n in _weight_matmuls(model)})
    known = {o.name for o in model.graph.output}
    # the inputs are outputs only while the session is built: no second copy of the graph
    outputs = len(model.graph.output)
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None) for x in inputs if x not in known
    )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the extra outputs make onnxruntime warn about nothing
    try:
        sess = ort_session(model, workdir, opts)
    finally:
        del model.graph.output[outputs:]
    amax: dict[str, np.ndarray] = {}
    for i in range(len(calib.ids)):
        for name, v in zip(inputs, sess.run(inputs, calib.row_feed(i)), strict=True):
            c = np.abs(v).reshape(-1, v.shape[-1]).max(0)
            amax[name] = np.maximum(amax[name], c) if name in amax else c
    return amax


def outlier_channels(
    model: onnx.ModelProto,
    amax: dict[str, np.ndarray],
    ratio: float = RATIO,
    max_channels: int = MAX_CHANNELS,
) -> dict[str, np.ndarray]:
    """MatMul name → the sorted input channels to split out (outlier activations or weight rows)."""
    from onnx import numpy_helper

    init = {i.name: i for i in model.graph.initializer}
    out = {}
    for n in _weight_matmuls(model):
        rows = np.abs(numpy_helper.to_array(init[n.input[1]])).max(1)
        score = rows / max(float(np.median(rows)), 1e-30)
        if n.input[0] in amax:
            a = amax[n.input[0]]
            score = np.maximum(score, a / max(float(np.median(a)), 1e-30))
        idx = np.nonzero(score > ratio)[0]
        if len(idx):
            out[n.name] = np.sort(idx[np.argsort(-score[idx])][:max_channels])
    return out


def split(model: onnx.ModelProto, channels: dict[str, np.ndarray], *, copy: bool = True) -> onnx.ModelProto:
    """A copy of ``model`` (``copy=False``: ``model`` itself) with each named MatMul's ``channels``
    on a float side path (see the module docstring); the main MatMul keeps its node name, so roles
    and reports still find it."""
    import onnx
    from onnx import helper, numpy_helper

    m = model
    if copy:
        m = onnx.ModelProto()
        m.CopyFrom(model)
    g = m.graph
    init = {i.name: i for i in g.initializer}
    nodes = []
    for n in g.node:
        idx = channels.get(n.name)
        if n.op_type != "MatMul" or idx is None or not len(idx):
            nodes.append(n)
            continue
        w = numpy_helper.to_array(init[n.input[1]])
        rest = w.copy()
        rest[idx] = 0
        mask = np.ones(w.shape[0], w.dtype)
        mask[idx] = 0
        p, x, y = n.name, n.input[0], n.output[0]
        g.initializer.extend(
            [
                numpy_helper.from_array(rest, f"{p}/rest"),
                numpy_helper.from_array(np.ascontiguousarray(w[idx]), f"{p}/outlier_rows"),
                numpy_helper.from_array(mask, f"{p}/mask"),
                numpy_helper.from_array(np.asarray(idx, np.int64), f"{p}/outlier_idx"),
            ]
        )
        nodes += [
            helper.make_node("Mul", [x, f"{p}/mask"], [f"{p}/masked"], name=f"{p}/Mask"),
            helper.make_node("MatMul", [f"{p}/masked", f"{p}/rest"], [f"{p}/main"], name=p),
            helper.make_node(
                "Gather", [x, f"{p}/outlier_idx"], [f"{p}/xo"], name=f"{p}/OutlierGather", axis=-1
            ),
            helper.make_node(
                "MatMul", [f"{p}/xo", f"{p}/outlier_rows"], [f"{p}/side"], name=f"{p}/OutlierMatMul"
            ),
            helper.make_node("Add", [f"{p}/main", f"{p}/side"], [y], name=f"{p}/OutlierAdd"),
        ]
    # the original weights are no longer read: drop them so the file does not carry both
    used = {i for nd in nodes for i in nd.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.node[:]
    g.node.extend(nodes)
    return m


def drop_unused_masks(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without the masks that no activation quantizer follows: ``W_rest``'s outlier rows
    are zero, so ``(x * mask) @ W_rest == x @ W_rest`` and the mask only matters where the int8
    activation scale must not see the outlier channels. Saves one elementwise pass over each
    such MatMul's input (int8 weights alone is what the search keeps on real MiniLM and MPNet)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    masks = {n.output[0]: n for n in g.node if n.op_type == "Mul" and n.name.endswith("/Mask")}
    dropped = set()
    for n in g.node:
        if n.op_type == "MatMul" and n.input[0] in masks and masks[n.input[0]].name == f"{n.name}/Mask":
            mask = masks[n.input[0]]
            n.input[0] = mask.input[0]
            dropped.add(mask.name)
    read = {i for n in g.node if n.name not in dropped for i in n.input}
    keep = [n for n in g.node if n.name not in dropped]
    del g.node[:]
    g.node.extend(keep)
    inits = [i for i in g.initializer if i.name in read]
    del g.initializer[:]
    g.initializer.extend(inits)
    return m
