"""Graph building: PyTorch → ONNX (TorchScript exporter), ORT transformer fusion, pooling head.

Pooling and normalisation are appended *after* fusion: adding them before broke
SkipLayerNormalization fusion.
"""

from __future__ import annotations

import collections
import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..manifest import INPUT_NAMES, OUTPUT_NAME, Pooling

if TYPE_CHECKING:
    import onnx

OPSET = 17
INPUTS = INPUT_NAMES
HIDDEN = "last_hidden_state"
TOKEN_TYPES = "token_type_ids"


def inputs(token_types: bool = False) -> tuple[str, ...]:
    """The graph's inputs in feeding order: token type ids last, for a graph that takes them."""
    return (*INPUTS, TOKEN_TYPES) if token_types else INPUTS


def load_model(model_dir: Path, trust_remote_code: bool = False):  # type: ignore[no-untyped-def]
    """The bare transformer in eager attention (the sdpa graph does not fuse), no pooler head."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        return AutoModel.from_pretrained(
            model_dir,
            attn_implementation="eager",
            add_pooling_layer=False,
            trust_remote_code=trust_remote_code,
        ).eval()
    except TypeError:  # architectures without a pooler take no add_pooling_layer
        return AutoModel.from_pretrained(
            model_dir, attn_implementation="eager", trust_remote_code=trust_remote_code
        ).eval()


def export_backbone(
    model_dir: Path,
    out_path: Path,
    *,
    opset: int = OPSET,
    trust_remote_code: bool = False,
    token_types: bool = False,
) -> None:
    """Export the transformer (no pooling) with dynamic batch and sequence axes.

    Token type ids are an input only with ``token_types`` (a BERT cross-encoder, whose document
    is segment 1): for one-sequence embeddings they are all zeros, and the model computes that
    itself (EmbedLayerNormalization still fuses). A cross-encoder's checkpoint loads as its bare
    transformer here; its classification head is appended after fusion (``export.rerank_head``).
    """
    import torch

    model = load_model(model_dir, trust_remote_code).eval()

    class Backbone(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.m(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state

    wrapper = Backbone(model).eval()  # eval(): otherwise dropout is live in the export
    ids = torch.full((2, 16), 100, dtype=torch.long)
    mask = torch.ones_like(ids)
    names = inputs(token_types)
    args = (ids, mask, torch.zeros_like(ids)) if token_types else (ids, mask)
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            args,
            str(out_path),
            input_names=list(names),
            output_names=[HIDDEN],
            dynamic_axes={**{n: axes for n in names}, HIDDEN: axes},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _major_minor(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("+")[0].split(".")[:2] if x.isdigit())


def attention_fusion_hint() -> str:
    """Why Attention may not have fused, when the versions explain it: onnxruntime before 1.31
    misses the attention-mask subgraph of transformers 5's BERT (measured on the tiny BERT with
    transformers 5.17: onnxruntime 1.30 fused no Attention or EmbedLayerNormalization, 1.31.1 and
    1.32 fused both, on the same raw graph)."""
    import onnxruntime
    import transformers

    ort, tf = onnxruntime.__version__, transformers.__version__
    if _major_minor(tf) >= (5, 0) and _major_minor(ort) < (1, 31):
        return (
            f" (onnxruntime {ort} does not fuse transformers {tf}'s attention; 1.31 and later do: "
            "pip install -U 'onnxruntime>=1.31', or onnxruntime-gpu>=1.31)"
        )
    return ""


def fuse(
    raw_path: Path, num_heads: int, hidden_size: int, workdir: Path | None = None
) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Run ONNX Runtime's BERT fusions; return the fused model and its fused-op counts.

    ``workdir``: the fusions run on the graph with its weights in a file there (ONNX external
    data), read back into the result at the end: the same graph, byte for byte, without the copies
    of the weights that onnxruntime's symbolic shape inference makes (on a base-size model the
    fusions peaked 2.9 GB above the graph; 0.5 GB this way: docs/performance.md, "Export time and
    memory")."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    if workdir is None:
        opt = optimize_model(
            str(raw_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
        )
    else:
        from onnx.external_data_helper import load_external_data_for_model

        workdir = workdir.resolve()
        data = "fuse.onnx.data"
        source = onnx.load(str(raw_path))
        onnx.save_model(
            source,
            str(workdir / "fuse.onnx"),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data,
        )
        del source
        source = onnx.load(str(workdir / "fuse.onnx"), load_external_data=False)
        # the fusions that read a weight (QKV concatenation) read it through onnx, which resolves
        # the data file against the working directory
        with _working_directory(workdir):
            opt = optimize_model(
                source, model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
            )
            del source
        load_external_data_for_model(opt.model, str(workdir))
        for t in opt.model.graph.initializer:
            # loading marks each tensor DEFAULT explicitly, which a graph never loaded leaves unset
            if t.HasField("data_location") and t.data_location == onnx.TensorProto.DEFAULT:
                t.ClearField("data_location")
        (workdir / data).unlink()
        (workdir / "fuse.onnx").unlink()
    stats = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
    model = opt.model
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        # fused ops live in ORT's contrib domain; shape inference (and the quantizer) need it declared
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return model, stats


def ort_session(model: onnx.ModelProto, workdir: Path | None, options: Any = None) -> Any:
    """An onnxruntime CPU session over ``model``, read from a file in ``workdir`` when one is
    given: a session made from bytes keeps them for its life (onnxruntime's Python wrapper holds
    them to rebuild the session), 440 MB on a base-size graph beside the session's own copy."""
    import onnx
    import onnxruntime as ort

    if workdir is None:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    path = workdir / "session.onnx"
    onnx.save(model, str(path))
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    finally:
        path.unlink()


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def append_head(
    model: onnx.ModelProto, pooling: Pooling, normalize: bool, dim: int, *, copy: bool = True
) -> onnx.ModelProto:
    """Replace the ``last_hidden_state`` output with pooled (and L2-normalised) ``sentence_embedding``.

    Pooling assumes right padding (the runtime pads right). Works on a copy, or with
    ``copy=False`` in place (a base-size graph is 440 MB: no second one when the first is done with).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if copy:
        m = onnx.ModelProto()
        m.CopyFrom(model)
    else:
        m = model
    g = m.graph
    if [o.name for o in g.output] != [HIDDEN]:
        raise ValueError(f"expected one output {HIDDEN!r}, got {[o.name for o in g.output]}")

    def const(name: str, value: np.ndarray) -> str:
        g.initializer.append(numpy_helper.from_array(value, name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        g.node.append(helper.make_node(op, inputs, [out], name=f"head/{out}", **attrs))
        return out

    h, mask = HIDDEN, "attention_mask"
    if pooling == Pooling.CLS:
        pooled = node("Gather", [h, const("head/zero", np.array(0, np.int64))], "head/pooled", axis=1)
    elif pooling == Pooling.MEAN:
        axis1 = const("head/axis1", np.array([1], np.int64))
        m_f = node("Cast", [mask], "head/mask_f", to=TensorProto.FLOAT)
        m_e = node("Unsqueeze", [m_f, const("head/axis2", np.array([2], np.int64))], "head/mask_e")
        summed = node("ReduceSum", [node("Mul", [h, m_e], "head/masked"), axis1], "head/sum", keepdims=0)
        count = node("ReduceSum", [m_e, axis1], "head/count", keepdims=0)
        count = node("Max", [count, const("head/min_count", np.array(1e-9, np.float32))], "head/count_c")
        pooled = node("Div", [summed, count], "head/pooled")
    elif pooling == Pooling.LAST:
        axis1 = const("head/axis1", np.array([1], np.int64))
        length = node("ReduceSum", [mask, axis1], "head/length", keepdims=1)  # [B, 1]
        last = node("Sub", [length, const("head/one", np.array(1, np.int64))], "head/last")
        last = node("Max", [last, const("head/zero_i", np.array(0, np.int64))], "head/last_c")
        last = node("Unsqueeze", [last, const("head/axis2", np.array([2], np.int64))], "head/last_e")
        idx = node("Expand", [last, const("head/bcast", np.array([1, 1, dim], np.int64))], "head/idx")
        picked = node("GatherElements", [h, idx], "head/picked", axis=1)  # [B, 1, H]
        pooled = node("Squeeze", [picked, axis1], "head/pooled")
    else:  # pragma: no cover - Enum is closed
        raise ValueError(pooling)

    if normalize:
        norm = node("ReduceL2", [pooled], "head/norm", axes=[-1], keepdims=1)
        norm = node("Max", [norm, const("head/eps", np.array(1e-12, np.float32))], "head/norm_c")
        pooled = node("Div", [pooled, norm], "head/normalized")
    node("Identity", [pooled], OUTPUT_NAME)

    del g.output[:]
    g.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", dim]))
    return m


def cls_only_last_layer(model: onnx.ModelProto) -> bool:
    """For CLS pooling, run the last layer's attention-output projection and FFN on token 0 only.

    Every token still provides keys and values to the last Attention, but only the CLS row of its
    output is used downstream, so the rest of the layer is sliced to [batch, 1, hidden] before the
    attention-output MatMul. Exact (same math on the rows that matter); saves ~9/12 of one layer.
    Works in place on a fused graph; returns False (graph untouched) if the pattern is not found.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)

    def split(skip: onnx.NodeProto) -> tuple[str, str] | None:
        """(branch input from a MatMul, residual input) of a SkipLayerNormalization."""
        a, b = skip.input[0], skip.input[1]
        pa, pb = producer.get(a), producer.get(b)
        if pa is not None and pa.op_type == "MatMul":
            return a, b
        if pb is not None and pb.op_type == "MatMul":
            return b, a
        return None

    ffn_skip = producer.get(HIDDEN)
    if ffn_skip is None or ffn_skip.op_type != "SkipLayerNormalization" or len(ffn_skip.output) != 1:
        return False
    parts = split(ffn_skip)
    if parts is None:
        return False
    attn_skip = producer.get(parts[1])
    if attn_skip is None or attn_skip.op_type != "SkipLayerNormalization":
        return False
    parts = split(attn_skip)
    if parts is None:
        return False
    attn_out_mm, residual = producer[parts[0]], parts[1]
    attention = producer.get(attn_out_mm.input[0])
    if attention is None or attention.op_type != "Attention" or len(consumers[attention.output[0]]) != 1:
        return False
    if len(consumers[attn_out_mm.output[0]]) != 1:
        return False

    g.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "cls_only/index"))
    new_nodes = []
    for name, target, slot in (("attention", attn_out_mm, 0), ("residual", attn_skip, None)):
        src = target.input[slot] if slot is not None else residual
        sliced = f"cls_only/{name}"
        new_nodes.append(helper.make_node("Gather", [src, "cls_only/index"], [sliced], name=sliced, axis=1))
        idx = list(target.input).index(src)
        target.input[idx] = sliced
    # keep topological order: the slices go right before the nodes that now read them
    pos = min(list(g.node).index(attn_out_mm), list(g.node).index(attn_skip))
    for k, n in enumerate(new_nodes):
        g.node.insert(pos + k, n)
    return True


def unfuse_skip_layernorm(model: onnx.ModelProto) -> int:
    """Replace ORT's fused SkipLayerNormalization by Add (+ bias Add) + standard LayerNormalization.

    For the CPU variants only: onnxruntime 1.32's contrib SkipLayerNormalization CPU kernel is
    several times slower than the standard LayerNormalization + Add pair, which makes the whole
    model faster for the same math (figures: docs/performance.md, "Levers" and "Why the runtime's
    defaults are what they are").
    onnxruntime 1.24 re-fuses the pair at load, so older versions lose nothing.
    The fp16 (CUDA) variant keeps the fused op. Returns the number of nodes replaced.

    The sum is built as ``(x + skip) + bias``, which onnxruntime 1.32 does not fuse back.
    ``(branch + bias) + residual`` would let it fold the bias into the MatMul (a little faster
    per batch, nothing through ``encode``) but is exactly what its SkipLayerNormFusion matches;
    CPU sessions disable that fusion anyway (``runtime.session.CPU_DISABLED_OPTIMIZERS``).
    """
    from onnx import helper

    g = model.graph
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    new_nodes = []
    replaced = 0
    for n in g.node:
        if not (
            n.op_type == "SkipLayerNormalization"
            and n.domain == "com.microsoft"
            and all(o == "" or o not in used for o in n.output[1:])
        ):
            new_nodes.append(n)
            continue
        x, skip, gamma = n.input[0], n.input[1], n.input[2]
        beta = n.input[3] if len(n.input) > 3 else ""
        bias = n.input[4] if len(n.input) > 4 else ""
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-12)
        total = f"{n.name}/sum"
        new_nodes.append(helper.make_node("Add", [x, skip], [total], name=f"{n.name}/add"))
        if bias:
            new_nodes.append(
                helper.make_node("Add", [total, bias], [f"{total}_bias"], name=f"{n.name}/add_bias")
            )
            total = f"{total}_bias"
        new_nodes.append(
            helper.make_node(
                "LayerNormalization",
                [total, gamma] + ([beta] if beta else []),
                [n.output[0]],
                name=f"{n.name}/layernorm",
                axis=-1,
                epsilon=eps,
            )
        )
        replaced += 1
    del g.node[:]
    g.node.extend(new_nodes)
    return replaced
