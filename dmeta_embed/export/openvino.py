"""The ``int8-ov`` variant: static int8 QDQ run by OpenVINO (``runtime.openvino``).

OpenVINO's fused int8 kernels with static activation scales run batches faster than onnxruntime's
dynamic int8 on CPUs with int8 units (docs/performance.md, "Why the runtime's defaults are what
they are"), but static scales cost fidelity on real weights: with every MatMul quantized they miss
the bar (docs/export.md, "Fidelity", the int8-ov search, has the figures for what follows). So the
export searches:

1. each MatMul's outlier input channels (calibration activations or weight rows far above the
   median) move to a float side path (``outlier_split``; some real models need it even for int8
   weights alone), then NNCF quantizes the graph (``ModelType.TRANSFORMER``; SmoothQuant off: on
   real weights it lowered fidelity further), calibrated on the calibration texts;
2. each candidate is run through OpenVINO's CPU plugin (the runtime's engine for it) on the
   calibration texts against the fp32 graph: every activation static; if that misses the
   tightened bar, every activation float (int8 weights only); then the number of roles of
   ``ROLE_ORDER`` whose activation quantizers are removed is bisected (those MatMuls keep int8
   weights and run in the float precision below). On real weights the FFN projections are the
   roles that matter, the output projection most;
3. when even int8 weights alone miss the tightened bar, whole roles of ``WEIGHT_ROLE_ORDER`` keep
   float weights too, one more per trial, until it is met (or every role is float: the variant's
   validation then decides). Weights-only int8 can pass the calibration texts and still miss the
   bar on a held-out text (a word repeated past max length), which one role's float weights fix
   (docs/performance.md, "AVX-512 VNNI", its levers table).

The float parts run in f32, or in bf16 where the export machine computes bf16 natively and bf16
met the bar and ran faster (``BF16``; the manifest's ``engine_properties`` say which).

Heavy dependencies (nncf, openvino): the ``export-openvino`` extra.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._optional import require_feature
from ..variant_records import EngineProperties, InferencePrecision

if TYPE_CHECKING:
    import onnx

    from ..runtime.tokenize import Tokenized

log = logging.getLogger(__name__)

#: roles removed from static quantization in this order until the bar is met, most sensitive first
#: on real weights (docs/export.md, "Fidelity"); "other" is anything the name patterns do not place
ROLE_ORDER = ("ffn_output", "ffn_intermediate", "attention_output", "qkv", "other")
_ROLES = (
    ("ffn_intermediate", re.compile(r"intermediate/dense/MatMul$")),
    ("attention_output", re.compile(r"attention/(output/dense|attn/o)/MatMul$")),  # BERT | MPNet
    ("ffn_output", re.compile(r"output/dense/MatMul$")),
    ("qkv", re.compile(r"attention/(self/(query|key|value)|attn/[qkv])/MatMul$")),
)


#: roles whose weights stay float, cumulatively, when int8 weights alone miss the bar, the fewest
#: float weight bytes first (attention output: 1/12 of a BERT layer's weights): on real weights any
#: one role's float weights lift the worst held-out text about as much, and the attention output
#: costs the least speed (docs/performance.md, "AVX-512 VNNI", its levers table)
WEIGHT_ROLE_ORDER = ("attention_output", "ffn_intermediate", "ffn_output", "qkv", "other")
#: the last float-weight step, after every MatMul role: the embedding tables NNCF stores in int8
#: (word, position, token-type and relative-attention-bias lookups), which a graph with every
#: MatMul's weights float otherwise still reads through a DequantizeLinear
EMBEDDINGS = "embeddings"


def embedding_lookups(model: onnx.ModelProto) -> list[str]:
    """The Gather nodes that read a constant table (the embeddings NNCF quantizes)."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits]


def require() -> None:
    """Fail early, with the pip line, when the ``export-openvino`` extra is missing."""
    require_feature("export-openvino")


#: the float parts in bf16: tried by the export on CPUs with native bf16 (``CpuInfo.bf16``: AMX,
#: AVX512-BF16) and kept when it meets the bar and runs faster there (docs/performance.md, "OpenVINO").
#: OpenVINO 2025.4 computed float-heavy graphs wrongly in bf16; 2026.4 (the ``openvino`` extra's
#: floor) gets them right
BF16 = EngineProperties(InferencePrecision.BF16)


def cpu_properties() -> EngineProperties:
    """OpenVINO CPU properties the search runs with, and the variant's unless bf16 wins: f32 float
    parts (the same on every CPU)."""
    return EngineProperties(InferencePrecision.F32)


def engine_version() -> str:
    import openvino as ov

    return f"openvino {ov.get_version().split('-')[0]} CPU"


def role_of(matmul: str) -> str:
    for role, pattern in _ROLES:
        if pattern.search(matmul):
            return role
    return "other"


@dataclass
class Quantizer:
    """One activation QuantizeLinear and the MatMuls its DequantizeLinear feeds."""

    name: str
    consumers: list[str]

    @property
    def role(self) -> str:
        roles = {role_of(c) for c in self.consumers}
        return next((r for r in ROLE_ORDER if r in roles), "other")


def _users(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """tensor name → the nodes that read it"""
    users = collections.defaultdict(list)
    for n in graph.node:
        for i in n.input:
            users[i].append(n)
    return users


def activation_quantizers(model: onnx.ModelProto) -> list[Quantizer]:
    g = model.graph
    consts = {i.name for i in g.initializer}
    users = _users(g)
    out = []
    for n in g.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in consts:
            dqs = [u for u in users[n.output[0]] if u.op_type == "DequantizeLinear"]
            out.append(Quantizer(n.name, [u.name for dq in dqs for u in users[dq.output[0]]]))
    return out


def unquantize(model: onnx.ModelProto, names: set[str]) -> onnx.ModelProto:
    """A copy without the activation Q→DQ pairs named: their consumers read the float tensor."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    users = _users(g)
    drop = set()
    for n in g.node:
        if n.op_type == "QuantizeLinear" and n.name in names:
            for dq in users[n.output[0]]:
                for u in users[dq.output[0]]:
                    u.input[:] = [n.input[0] if i == dq.output[0] else i for i in u.input]
                drop.add(dq.name)
            drop.add(n.name)
    keep = [n for n in g.node if n.name not in drop]
    del g.node[:]
    g.node.extend(keep)
    return m


def quantize_static(
    model: onnx.ModelProto | Path,
    calib: Tokenized,
    float_weights: tuple[str, ...] = (),
    amax: dict[str, np.ndarray] | None = None,
    workdir: Path | None = None,
) -> onnx.ModelProto:
    """NNCF static int8 QDQ, one calibration text per sample (no padding in the statistics), after
    each MatMul's outlier channels are moved to a float side path (``outlier_split``: without it
    some real models miss the bar even with int8 weights alone). The MatMuls of the roles
    in ``float_weights`` are left out of quantization altogether (float weights and inputs).

    ``model``: a graph (left as it is) or its file (loaded here and split in place). ``amax``:
    ``outlier_split.activation_absmax(model, calib)`` when the caller has it (a search quantizes
    the same model several times). ``workdir``: NNCF gets the graph with its weights in a file
    there (ONNX external data), the same result for a fraction of the memory (:func:`_nncf`)."""
    import onnx

    from . import outlier_split
    from .rerank_head import is_head

    loaded = isinstance(model, Path)
    m = onnx.load(str(model)) if isinstance(model, Path) else model
    if amax is None:
        amax = outlier_split.activation_absmax(m, calib, workdir)
    channels = outlier_split.outlier_channels(m, amax)
    # a MatMul that stays float whole needs no side path
    channels = {
        name: c for name, c in channels.items() if role_of(name) not in float_weights and not is_head(name)
    }
    log.info(
        "int8-ov: %d outlier channels of %d MatMuls kept on a float side path",
        sum(len(c) for c in channels.values()),
        len(channels),
    )
    split = outlier_split.split(m, channels, copy=not loaded)
    del m
    # a cross-encoder's head stays fp32, as int8 keeps it (it reads one token: no speed to gain)
    keep = [
        n.name
        for n in split.graph.node
        if n.op_type == "MatMul" and (role_of(n.name) in float_weights or is_head(n.name))
    ]
    if EMBEDDINGS in float_weights:
        keep += embedding_lookups(split)
    items = [calib.row_feed(i) for i in range(len(calib.ids))]
    folder = None
    if workdir is not None:
        folder = workdir / "nncf"
        split = _weights_to_disk(split, folder)  # rebound: the graph with its weights is dropped here
    return _nncf(split, items, keep, folder)


def _weights_to_disk(model: onnx.ModelProto, folder: Path) -> onnx.ModelProto:
    """``model`` written to ``folder`` with its weights in a file beside it (ONNX external data),
    and read back without them."""
    import onnx

    shutil.rmtree(folder, ignore_errors=True)  # onnx appends to a data file already there
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="model.data"
    )
    return onnx.load(str(path), load_external_data=False)


def _nncf(
    model: onnx.ModelProto, items: list[dict[str, np.ndarray]], keep: list[str], weights: Path | None
) -> onnx.ModelProto:
    """``nncf.quantize`` of ``model`` (ignoring the MatMuls ``keep`` and the outlier side paths).

    NNCF's ONNX backend copies the graph several times (a deep copy per transformation, a
    serialization to check its size, one per statistics session): on a base-size model it peaked
    3.2 GB above the graph it was given. ``weights``: ``model`` is a graph whose weights are in
    that folder (:func:`_weights_to_disk`; what NNCF's ``EXTERNAL_DATA_DIR`` is for): the copies
    are the graph alone, the sessions read the weights from the file, and NNCF loads them into the
    result; 1.5 GB at most above it. The same graph, byte for byte, once the ``data_location``
    each loaded tensor is marked with is cleared (figures: docs/performance.md, "Export time and
    memory")."""
    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    from . import outlier_split

    no_smooth_quant = AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1)
    )
    if weights is not None:
        from nncf.onnx.quantization.backend_parameters import BackendParameters

        no_smooth_quant.backend_params = {BackendParameters.EXTERNAL_DATA_DIR: str(weights.resolve())}
    with _nncf_output_to_stderr():
        out = nncf.quantize(
            model,
            nncf.Dataset(items),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(items),
            advanced_parameters=no_smooth_quant,
            ignored_scope=nncf.IgnoredScope(
                names=keep, patterns=[outlier_split.IGNORED_PATTERN], validate=False
            ),
        )
    if weights is None:
        return out
    for t in out.graph.initializer:
        if t.HasField("data_location") and t.data_location == onnx.TensorProto.DEFAULT:
            t.ClearField("data_location")
    # NNCF read the float weights into the result before it replaced them by int8 ones: a copy
    # holds the int8 graph alone (the replaced tensors stay in a protobuf message until it is freed)
    compact = onnx.ModelProto()
    compact.CopyFrom(out)
    return compact


@contextlib.contextmanager
def _nncf_output_to_stderr() -> Iterator[None]:
    """NNCF writes its progress bars (rich, to the current ``sys.stdout``) and its log (a handler
    bound to ``sys.stdout`` at import) to stdout; ``dmeta-embed export`` keeps stdout for its
    result, so both go to stderr while NNCF runs."""
    import sys

    from nncf.common.logging.logger import nncf_logger

    moved = [
        h
        for h in nncf_logger.handlers
        if isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.__stdout__)
    ]
    before = [h.setStream(sys.stderr) for h in moved]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for h, stream in zip(moved, before, strict=True):
            h.setStream(stream)
