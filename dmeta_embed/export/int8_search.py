"""The int8 sensitivity search's measuring instrument: one fp32 session that can emulate dynamic
int8 on any chosen set of nodes, so a trial is one pass over the calibration texts instead of a
``quantize_dynamic`` call, a new session and a pass.

Each quantizable node becomes an ``If`` on a boolean overridable initializer (default false): the
else branch is the fp32 node; the then branch reads its input through the
``DynamicQuantizeLinear``/``DequantizeLinear`` pair onnxruntime's dynamic int8 runs (asymmetric
u8, one scale per call over the whole batch, as the real kernels) and its weight's symmetric
per-output-channel int8 round trip (7-bit for ``Attention``, which onnxruntime quantizes with
``reduce_range``). Only the taken branch runs, so the fp32 parts run at fp32 speed. The emulation
is exact up to float rounding: u8 × s8 products summed in int32 are what the float products of the
dequantized values give (measured on the tiny BERT: emulated min cos 0.99397 where the real
quantized graph gave 0.99470).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

    from ..runtime.tokenize import Tokenized


def _gate(node: str) -> str:
    return f"int8_emulation/{node}/gate"


def fake_quant_weight(w: np.ndarray, levels: int) -> np.ndarray:
    """Symmetric int8 per output channel (the last axis), dequantized."""
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / levels
    return (np.clip(np.round(w / scale), -levels, levels) * scale).astype(np.float32)


class Emulator:
    """``run(quantized)``: embeddings of the calibration texts with the named nodes in int8."""

    def __init__(self, model: onnx.ModelProto, nodes: list[str], calib: Tokenized, pad_id: int) -> None:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        m = onnx.ModelProto()
        m.CopyFrom(model)
        g = m.graph
        inits = {i.name: i for i in g.initializer}
        by_name = {n.name: n for n in g.node}
        readers: dict[str, int] = {}
        for n in g.node:
            for i in n.input:
                readers[i] = readers.get(i, 0) + 1
        self.nodes: list[str] = []
        for name in nodes:
            node = by_name[name]
            if len([o for o in node.output if o]) != 1:
                continue  # an op with extra outputs (Attention's "present") is never emulated
            w_name, x = node.input[1], node.input[0]
            w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
            p = f"int8_emulation/{name}"
            g.initializer.append(
                numpy_helper.from_array(
                    fake_quant_weight(w, 63 if node.op_type == "Attention" else 127), f"{p}/w"
                )
            )
            gate = _gate(name)
            g.initializer.append(numpy_helper.from_array(np.array(False), gate))
            g.input.append(helper.make_tensor_value_info(gate, TensorProto.BOOL, []))
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            rest = list(node.input[2:])

            def op(
                inputs: list[str], out: str, node: onnx.NodeProto = node, attrs: dict = attrs
            ) -> onnx.NodeProto:
                return helper.make_node(node.op_type, inputs, [out], domain=node.domain, **attrs)

            then = helper.make_graph(
                [
                    helper.make_node("DynamicQuantizeLinear", [x], [f"{p}/q", f"{p}/s", f"{p}/z"]),
                    helper.make_node("DequantizeLinear", [f"{p}/q", f"{p}/s", f"{p}/z"], [f"{p}/dq"]),
                    op([f"{p}/dq", f"{p}/w", *rest], f"{p}/int8"),
                ],
                f"{p}/then",
                [],
                [helper.make_tensor_value_info(f"{p}/int8", TensorProto.FLOAT, None)],
            )
            orig = helper.make_graph(
                [op([x, w_name, *rest], f"{p}/fp32")],
                f"{p}/else",
                [],
                [helper.make_tensor_value_info(f"{p}/fp32", TensorProto.FLOAT, None)],
            )
            switch = helper.make_node(
                "If", [gate], [node.output[0]], name=f"{p}/if", then_branch=then, else_branch=orig
            )
            node.CopyFrom(switch)
            self.nodes.append(name)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        self.session = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        self.out = self.session.get_outputs()[0].name
        self.ids, self.lengths, self.pad_id = calib.ids, np.asarray(calib.lengths), pad_id
        self.n = len(calib.ids)
        self.gates = set(self.nodes)
        self._plans: dict[tuple[int, ...] | None, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}

    def _plan(self, texts: tuple[int, ...] | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Batches (positions in ``texts``, ids, mask) as the runtime plans them, built once."""
        from ..runtime.batching import pad, plan_batches

        if texts not in self._plans:
            idx = np.arange(self.n) if texts is None else np.asarray(texts)
            self._plans[texts] = [
                (b, *pad(self.ids, idx[b], self.pad_id)) for b in plan_batches(self.lengths[idx], 4096, 16)
            ]
        return self._plans[texts]

    def run(self, quantized: Iterable[str], texts: tuple[int, ...] | None = None) -> np.ndarray:
        """Embeddings of the calibration texts (or of those at ``texts``, in that order) with the
        ``quantized`` nodes in int8 and every other node fp32."""
        on = np.array(True)
        feeds = {_gate(name): on for name in quantized if name in self.gates}
        out = np.empty((self.n if texts is None else len(texts), 0), np.float32)
        for positions, ids, mask in self._plan(texts):
            rows = self.session.run([self.out], {"input_ids": ids, "attention_mask": mask, **feeds})[0]
            if out.shape[1] == 0:
                out = np.empty((out.shape[0], rows.shape[1]), np.float32)
            out[positions] = rows
        return out


_LAYER = re.compile(r"layer\.(\d+)/")


def layer_groups(model: onnx.ModelProto, nodes: list[str]) -> dict[str, int]:
    """node → its encoder layer: from ``layer.N/`` in its name, else (fused ``Attention_k``) the
    layer of the next named node in graph order."""
    order = [n.name for n in model.graph.node if n.name in set(nodes)]
    layer: dict[str, int] = {}
    pending: list[str] = []
    for name in order:
        found = _LAYER.search(name)
        if found is None:
            pending.append(name)
            continue
        k = int(found.group(1))
        for p in pending:
            layer[p] = k
        pending = []
        layer[name] = k
    last = max(layer.values(), default=0)
    for p in pending:
        layer[p] = last
    return layer
