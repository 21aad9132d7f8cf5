"""A cross-encoder's classification head, read from the PyTorch model and appended to the fused
ONNX backbone as nodes (as the embedding head is: ``graph.append_head``), so every variant's
backbone (fp16, int8, OpenVINO's) gets the same fp32 head and ``graph.cls_only_last_layer`` still
applies (the head reads the first token only).

Each supported family's head is the same three steps on the first token's hidden state: a dense
layer, an activation, a dense layer to ``num_labels`` logits (dropout is off in eval):

- BERT: the pooler (dense, tanh) then ``classifier``;
- RoBERTa, XLM-R, CamemBERT, MPNet: ``classifier.dense``, tanh, ``classifier.out_proj``;
- ELECTRA: ``classifier.dense``, GELU, ``classifier.out_proj``.

Any other head is an :class:`~dmeta_embed.errors.ExportError`: never a folder without its head.
The export's validation compares the result with transformers' own logits, so a head read wrong
cannot pass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ExportError
from ..rerank_records import LOGITS

if TYPE_CHECKING:
    import onnx

#: the hidden state the fused backbone outputs (``graph.HIDDEN``)
HIDDEN = "last_hidden_state"
#: the prefix of every node the head adds: the quantizers leave them fp32 (int8 appends the head
#: after quantizing; int8-ov's NNCF is told to ignore them), so every variant's head is fp32
PREFIX = "classifier/"


def is_head(node: str) -> bool:
    """Whether ``node`` is one of the classification head's (:func:`append_classifier`)."""
    return node.startswith(PREFIX)


@dataclass(frozen=True)
class ClassifierHead:
    """The head's weights, as ``x @ w + b`` (``w``: [in, out])."""

    dense_w: np.ndarray
    dense_b: np.ndarray
    #: ``tanh`` or ``gelu``
    activation: str
    out_w: np.ndarray
    out_b: np.ndarray

    @property
    def num_labels(self) -> int:
        return int(self.out_w.shape[1])


def load_classifier(model_dir: Path, trust_remote_code: bool = False) -> Any:
    """transformers' sequence-classification model in eager attention, in eval mode."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return AutoModelForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager", trust_remote_code=trust_remote_code
    ).eval()


def _linear(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    w = layer.weight.detach().float().numpy().T.copy()
    b = layer.bias.detach().float().numpy().copy()
    return w.astype(np.float32), b.astype(np.float32)


def read_head(model: Any) -> ClassifierHead:
    """The classification head of ``model`` (a transformers ``...ForSequenceClassification``)."""
    model_type = str(getattr(model.config, "model_type", ""))
    classifier = getattr(model, "classifier", None)
    if classifier is not None and hasattr(classifier, "dense") and hasattr(classifier, "out_proj"):
        activation = "gelu" if model_type == "electra" else "tanh"
        (dw, db), (ow, ob) = _linear(classifier.dense), _linear(classifier.out_proj)
        return ClassifierHead(dw, db, activation, ow, ob)
    base = getattr(model, "base_model", None)
    pooler = getattr(base, "pooler", None)
    if (
        model_type == "bert"
        and pooler is not None
        and classifier is not None
        and hasattr(classifier, "weight")
    ):
        (dw, db), (ow, ob) = _linear(pooler.dense), _linear(classifier)
        return ClassifierHead(dw, db, "tanh", ow, ob)
    raise ExportError(
        f"{type(model).__name__}: its classification head is not one this export knows how to put "
        "in the graph (BERT's pooler + classifier; RoBERTa, XLM-R, MPNet, ELECTRA's dense + out_proj)"
    )


def append_classifier(model: onnx.ModelProto, head: ClassifierHead, *, copy: bool = True) -> onnx.ModelProto:
    """Replace the ``last_hidden_state`` output with the head's ``logits`` [batch, num_labels],
    computed in fp32 from the first token (the runtime pads right). On a copy, or in place."""
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
        g.node.append(helper.make_node(op, inputs, [out], name=f"{PREFIX}{out}", **attrs))
        return out

    x = node("Gather", [HIDDEN, const("classifier/zero", np.array(0, np.int64))], "classifier/first", axis=1)
    x = node("MatMul", [x, const("classifier/dense_w", head.dense_w)], "classifier/dense_mm")
    x = node("Add", [x, const("classifier/dense_b", head.dense_b)], "classifier/dense")
    if head.activation == "tanh":
        x = node("Tanh", [x], "classifier/act")
    elif head.activation == "gelu":
        # exact GELU (erf), as transformers' "gelu": 0.5 x (1 + erf(x / sqrt 2))
        scaled = node(
            "Mul", [x, const("classifier/rsqrt2", np.array(1 / np.sqrt(2), np.float32))], "classifier/xs"
        )
        erf = node("Erf", [scaled], "classifier/erf")
        one = node("Add", [erf, const("classifier/one", np.array(1, np.float32))], "classifier/erf1")
        half = node("Mul", [x, const("classifier/half", np.array(0.5, np.float32))], "classifier/xh")
        x = node("Mul", [half, one], "classifier/act")
    else:  # pragma: no cover - read_head writes one of the two
        raise ValueError(head.activation)
    x = node("MatMul", [x, const("classifier/out_w", head.out_w)], "classifier/out_mm")
    node("Add", [x, const("classifier/out_b", head.out_b)], LOGITS)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["batch", head.num_labels]))
    return m


def torch_logits(
    model_dir: Path,
    pairs: list[tuple[str, str]],
    max_length: int,
    batch_size: int = 8,
    trust_remote_code: bool = False,
) -> np.ndarray:
    """transformers + torch fp32 logits of ``pairs``, tokenised as CrossEncoder tokenises them
    (``tokenizer(queries, documents, truncation=True, max_length=...)``): the reference every rerank
    variant is measured against. Independent of :func:`read_head`: the whole model runs."""
    import torch
    from transformers import AutoTokenizer

    from .progress import Progress

    tok = AutoTokenizer.from_pretrained(model_dir, use_fast=True, trust_remote_code=trust_remote_code)
    model = load_classifier(model_dir, trust_remote_code)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    out = np.empty((len(pairs), model.config.num_labels), dtype=np.float32)
    progress = Progress("reference batches", -(-len(order) // batch_size))
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            enc = tok(
                [pairs[i][0] for i in idx],
                [pairs[i][1] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out[idx] = model(**enc).logits.float().numpy()
            progress.step()
    return out
