"""Fuse attention that adds a relative-position bias (MPNet) into onnxruntime's ``Attention``.

onnxruntime's BERT optimizer fuses ``softmax(QK'/√d + mask)V`` but not MPNet's
``softmax(QK'/√d + position_bias + mask)V``: its patterns have one Add before the Softmax.
onnxruntime's contrib ``Attention`` takes an additive ``attention_bias`` input (shape
``[1 or batch, heads, seq, seq]``), so the same fusion applies with the bias as that input.

MPNet computes the bias once per shape (``MPNetEncoder.compute_position_bias``: relative-position
buckets → an embedding → ``[1, heads, seq, seq]``, then expanded to the batch); every layer reads
that one tensor. The fused graph keeps it computed once and passes the un-expanded
``[1, heads, seq, seq]`` tensor, which ``Attention`` broadcasts over the batch.

Works on the graph after :func:`graph.fuse` (SkipLayerNormalization fused or not). int8 note:
``QAttention`` has no ``attention_bias`` input, so the int8 variant splits this ``Attention`` into
its QKV MatMul (quantized per row) and ``MultiHeadAttention``, which keeps the bias
(``export.attention_split``).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

MASK_CAST = "relative_attention/mask_index"


class _Graph:
    """Producer / consumer lookups over a graph's nodes."""

    def __init__(self, g: onnx.GraphProto) -> None:
        self.g = g
        self.producer = {o: n for n in g.node for o in n.output}
        self.users: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
        for n in g.node:
            for i in n.input:
                self.users[i].append(n)
        self.inits = {i.name: i for i in g.initializer}

    def parent(self, node: onnx.NodeProto, index: int, op: str) -> onnx.NodeProto | None:
        if index >= len(node.input):
            return None
        p = self.producer.get(node.input[index])
        return p if p is not None and p.op_type == op else None

    def const(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        p = self.producer.get(name)
        if p is not None and p.op_type == "Constant":
            return numpy_helper.to_array(p.attribute[0].t)
        return None


def _perm(node: onnx.NodeProto) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def _projection(gr: _Graph, t: onnx.NodeProto | None, perm: list[int]) -> tuple | None:
    """Transpose(perm) ← Reshape ← Add(bias) ← MatMul(root, W): (root, W, b, nodes) or None."""
    if t is None or t.op_type != "Transpose" or _perm(t) != perm:
        return None
    reshape = gr.parent(t, 0, "Reshape")
    add = reshape and gr.parent(reshape, 0, "Add")
    if add is None or reshape is None:
        return None
    k = next((i for i in (0, 1) if add.input[i] in gr.inits), None)
    if k is None:
        return None
    mm = gr.parent(add, 1 - k, "MatMul")
    if mm is None or mm.input[1] not in gr.inits:
        return None
    w = gr.const(mm.input[1])
    b = gr.const(add.input[k])
    if w is None or b is None or w.ndim != 2 or b.shape != (w.shape[1],):
        return None
    return mm.input[0], w, b, [t, reshape, add, mm]


def _reaches(gr: _Graph, name: str, target: str, depth: int = 8) -> bool:
    """Whether tensor ``name`` is computed from ``target`` through single-input-ish chains."""
    if name == target:
        return True
    p = gr.producer.get(name)
    if p is None or depth == 0:
        return False
    return any(_reaches(gr, i, target, depth - 1) for i in p.input if i and i not in gr.inits)


def fuse_relative_attention(
    model: onnx.ModelProto, num_heads: int, mask_input: str = "attention_mask"
) -> int:
    """Fuse each ``softmax(QK'/s + bias + mask)V`` block into one ``Attention`` with
    ``attention_bias``; in place. Returns how many were fused (0: the graph is untouched)."""
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    gr = _Graph(g)
    fused: list[tuple[onnx.NodeProto, list[onnx.NodeProto]]] = []
    for softmax in [n for n in g.node if n.op_type == "Softmax"]:
        add_mask = gr.parent(softmax, 0, "Add")
        add_bias = add_mask and gr.parent(add_mask, 0, "Add")
        div = add_bias and gr.parent(add_bias, 0, "Div")
        mm_qk = div and gr.parent(div, 0, "MatMul")
        if add_mask is None or add_bias is None or div is None or mm_qk is None:
            continue
        if not _reaches(gr, add_mask.input[1], mask_input):
            continue
        users = gr.users[softmax.output[0]]
        if len(users) != 1 or users[0].op_type != "MatMul" or users[0].input[0] != softmax.output[0]:
            continue
        mm_v = users[0]
        out_t = gr.users[mm_v.output[0]]
        if len(out_t) != 1 or out_t[0].op_type != "Transpose" or _perm(out_t[0]) != [0, 2, 1, 3]:
            continue
        out_reshape = gr.users[out_t[0].output[0]]
        if len(out_reshape) != 1 or out_reshape[0].op_type != "Reshape":
            continue
        q = _projection(gr, gr.producer.get(mm_qk.input[0]), [0, 2, 1, 3])
        k = _projection(gr, gr.producer.get(mm_qk.input[1]), [0, 2, 3, 1])
        v = _projection(gr, gr.producer.get(mm_v.input[1]), [0, 2, 1, 3])
        if q is None or k is None or v is None or not q[0] == k[0] == v[0]:
            continue
        divisor = gr.const(div.input[1])
        if divisor is None or divisor.size != 1:
            continue
        mask_mul = gr.producer.get(add_mask.input[1])
        filter_value = None
        if mask_mul is not None and mask_mul.op_type == "Mul":
            vals = [gr.const(i) for i in mask_mul.input]
            filter_value = next((float(c.item()) for c in vals if c is not None and c.size == 1), None)
        bias = add_bias.input[1]
        expand = gr.producer.get(bias)
        if expand is not None and expand.op_type == "Expand":
            bias = expand.input[0]  # [1, heads, seq, seq]: Attention broadcasts it over the batch

        root, name = q[0], f"RelativeAttention_{len(fused)}"
        w = np.concatenate([q[1], k[1], v[1]], axis=1).astype(np.float32)
        b = np.concatenate([q[2], k[2], v[2]]).astype(np.float32)
        g.initializer.extend(
            [numpy_helper.from_array(w, f"{name}/qkv_weight"), numpy_helper.from_array(b, f"{name}/qkv_bias")]
        )
        hidden = w.shape[0]
        attrs: dict[str, Any] = {"num_heads": num_heads}
        scale = 1.0 / float(divisor.item())
        if not np.isclose(scale, 1.0 / np.sqrt(hidden // num_heads), rtol=1e-6):
            attrs["scale"] = scale
        if filter_value is not None:
            attrs["mask_filter_value"] = filter_value
        node = helper.make_node(
            "Attention",
            [root, f"{name}/qkv_weight", f"{name}/qkv_bias", MASK_CAST, "", bias],
            [out_reshape[0].output[0]],
            name=name,
            domain="com.microsoft",
            **attrs,
        )
        replaced = [
            add_mask,
            add_bias,
            div,
            mm_qk,
            softmax,
            mm_v,
            out_t[0],
            out_reshape[0],
            *q[3],
            *k[3],
            *v[3],
        ]
        fused.append((node, replaced))
    if not fused:
        return 0

    drop = {id(n) for _, rep in fused for n in rep}
    at = {id(rep[4]): node for node, rep in fused}  # each Attention goes where its Softmax was
    new_nodes = [helper.make_node("Cast", [mask_input], [MASK_CAST], name=MASK_CAST, to=TensorProto.INT32)]
    for n in g.node:
        if id(n) in at:
            new_nodes.append(at[id(n)])
        if id(n) not in drop:
            new_nodes.append(n)
    del g.node[:]
    g.node.extend(_topological(new_nodes, {i.name for i in g.input} | {i.name for i in g.initializer}))
    _prune(model)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(fused)


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Nodes in an order where each one's inputs exist before it (stable otherwise)."""
    have = set(available) | {""}
    pending = list(nodes)
    out: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for n in pending:
            if all(i in have for i in n.input):
                out.append(n)
                have.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError(f"relative attention fusion left a cycle or a missing input at {rest[0].name}")
        pending = rest
    return out


def _prune(model: onnx.ModelProto) -> None:
    """Drop nodes and initializers nothing reads any more (the old Q/K/V shape arithmetic)."""
    g = model.graph
    needed = {o.name for o in g.output}
    keep: list[onnx.NodeProto] = []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    inits = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
