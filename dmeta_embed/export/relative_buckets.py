"""Relative-position buckets as an integer table, so no precision can move a bucket.

MPNet (and T5-style models) turn each relative position ``j - i`` into a bucket with float
arithmetic: ``max_exact + log(|n| / max_exact) / log(max_distance / max_exact) * (buckets - max_exact)``
cast back to an integer. Every variant that computes in reduced precision (fp16 on CUDA, bf16 in
OpenVINO) computes that logarithm in reduced precision too, and a distance near a bucket boundary
lands in the next bucket: the attention bias of that token pair changes by a whole embedding row.
On real all-mpnet-base-v2 that alone held fp16 to min cos 0.99974 on digit-heavy text (bar 0.9999)
while fp16 weights with fp32 compute gave 0.9999992 (docs/export.md, "Degenerate input").

The bucket depends on nothing but the integer ``j - i``, and ``|j - i| < max_position_embeddings``,
so the export evaluates the graph's own bucket subgraph once, in fp32 with onnxruntime, for every
relative position, and replaces the subgraph with a lookup in that table: the fp32 graph computes
exactly what it computed before, and every reduced-precision variant now computes it exactly too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

#: what may lie between the integer relative positions and the bucket index: element-wise arithmetic,
#: comparisons and the shape plumbing of ``torch.full_like`` (anything else: the pass leaves the graph)
ELEMENTWISE = {
    "Abs", "Add", "Cast", "Constant", "ConstantOfShape", "Div", "Floor", "Greater", "Less", "Log",
    "Max", "Min", "Mul", "Neg", "Shape", "Sub", "Where",
}  # fmt: skip
TABLE = "relative_position/bucket_table"
OFFSET = "relative_position/offset"


def _relative_positions(producer: dict[str, onnx.NodeProto], name: str) -> str | None:
    """The tensor ``j - i`` upstream of ``name``: a Sub of two Unsqueezes of one Range."""
    seen: set[str] = set()
    stack = [name]
    while stack:
        t = stack.pop()
        node = producer.get(t)
        if node is None or t in seen:
            continue
        seen.add(t)
        if node.op_type == "Sub":
            ups = [producer.get(i) for i in node.input]
            if all(u is not None and u.op_type == "Unsqueeze" for u in ups):
                ranges = {producer[u.input[0]].op_type if u.input[0] in producer else "" for u in ups if u}
                sources = {u.input[0] for u in ups if u}
                if ranges == {"Range"} and len(sources) == 1:
                    return node.output[0]
        stack.extend(node.input)
    return None


def _between(producer: dict[str, onnx.NodeProto], start: str, end: str) -> list[onnx.NodeProto] | None:
    """The nodes computing ``end`` from ``start`` (and constants), in graph order; None when
    ``end`` needs any other input or an op outside :data:`ELEMENTWISE`."""
    nodes: dict[int, onnx.NodeProto] = {}
    stack = [end]
    while stack:
        t = stack.pop()
        if t == start or t == "":
            continue
        node = producer.get(t)
        if node is None or node.op_type not in ELEMENTWISE:
            return None
        if id(node) not in nodes:
            nodes[id(node)] = node
            stack.extend(node.input)
    return list(nodes.values())


def _evaluate(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], start: str, end: str, positions: int
) -> np.ndarray:
    """``end`` for every relative position in ``[-(positions - 1), positions - 1]``, computed by
    ``nodes`` in fp32 with onnxruntime (what the fp32 graph computes)."""
    import onnx
    import onnxruntime as ort

    order = {id(n): i for i, n in enumerate(model.graph.node)}
    body = sorted(nodes, key=lambda n: order[id(n)])
    names = {i for n in body for i in n.input}
    inits = [i for i in model.graph.initializer if i.name in names]
    g = onnx.helper.make_graph(
        body,
        "relative_buckets",
        [onnx.helper.make_tensor_value_info(start, onnx.TensorProto.INT64, [1, None])],
        [onnx.helper.make_tensor_value_info(end, onnx.TensorProto.INT64, None)],
        initializer=inits,
    )
    sub = onnx.helper.make_model(g, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    sess = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])
    rel = np.arange(-(positions - 1), positions, dtype=np.int64)[None, :]
    (out,) = sess.run(None, {start: rel})
    return np.asarray(out, dtype=np.int64).reshape(-1)


def tabulate(model: onnx.ModelProto, positions: int) -> int:
    """Replace each relative-position bucket subgraph (an embedding Gather whose indices are
    computed from ``j - i``) with a lookup in a table computed once in fp32; in place. Returns how
    many were replaced (0: the model has none, e.g. BERT's absolute positions)."""
    import onnx
    from onnx import numpy_helper

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name for i in g.initializer}
    done = 0
    for gather in [n for n in g.node if n.op_type == "Gather" and n.input[0] in inits]:
        indices = gather.input[1]
        rel = _relative_positions(producer, indices)
        if rel is None:
            continue
        nodes = _between(producer, rel, indices)
        if nodes is None or not any(n.op_type == "Log" for n in nodes):
            continue
        table = _evaluate(model, nodes, rel, indices, positions)
        suffix = f"_{done}" if done else ""
        g.initializer.extend(
            [
                numpy_helper.from_array(table, TABLE + suffix),
                numpy_helper.from_array(np.array(positions - 1, dtype=np.int64), OFFSET + suffix),
            ]
        )
        shifted = f"relative_position/shifted{suffix}"
        looked_up = f"relative_position/bucket{suffix}"
        add = onnx.helper.make_node("Add", [rel, OFFSET + suffix], [shifted], name=shifted)
        look = onnx.helper.make_node("Gather", [TABLE + suffix, shifted], [looked_up], name=looked_up)
        at = list(g.node).index(gather)
        g.node.insert(at, look)
        g.node.insert(at, add)
        gather.input[1] = looked_up
        done += 1
        log.info("relative-position buckets: %d float nodes → a table of %d", len(nodes), len(table))
    if done:
        _drop_unused(model)
    return done


def _drop_unused(model: onnx.ModelProto) -> None:
    """Remove nodes (and initializers) nothing reads any more."""
    g = model.graph
    needed = {o.name for o in g.output}
    keep = []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    unused = [i for i in g.initializer if i.name not in needed]
    for i in unused:
        g.initializer.remove(i)
