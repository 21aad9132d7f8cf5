"""Split onnxruntime's fused ``Attention`` into its QKV projection and ``MultiHeadAttention``.

The per-row int8 rewrite (``export.int8_rows``) quantizes MatMuls with a constant weight; the fused
``Attention`` computes its QKV projection inside one op, and onnxruntime's int8 ``QAttention`` has
no ``attention_bias`` input (MPNet's relative positions, ``export.relative_attention``). Split out,
the QKV projection is one more MatMul quantized per row, and ``MultiHeadAttention`` keeps the
attention core fused and fp32 with the same mask and bias.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx


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
