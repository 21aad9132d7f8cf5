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
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._optional import require_feature
from ..manifest import Bar
from ..runtime.pipeline import embed_as_runtime
from ..variant_records import EngineProperties, InferencePrecision

if TYPE_CHECKING:
    import onnx

    from ..runtime.openvino import OpenVINORunner
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
    model: onnx.ModelProto, calib: Tokenized, float_weights: tuple[str, ...] = ()
) -> onnx.ModelProto:
    """NNCF static int8 QDQ, one calibration text per sample (no padding in the statistics), after
    each MatMul's outlier channels are moved to a float side path (``outlier_split``: without it
    some real models miss the bar even with int8 weights alone). The MatMuls of the roles
    in ``float_weights`` are left out of quantization altogether (float weights and inputs)."""
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    from . import outlier_split

    channels = outlier_split.outlier_channels(model, outlier_split.activation_absmax(model, calib))
    # a MatMul that stays float whole needs no side path
    channels = {name: c for name, c in channels.items() if role_of(name) not in float_weights}
    log.info(
        "int8-ov: %d outlier channels of %d MatMuls kept on a float side path",
        sum(len(c) for c in channels.values()),
        len(channels),
    )
    model = outlier_split.split(model, channels)
    keep = [n.name for n in model.graph.node if n.op_type == "MatMul" and role_of(n.name) in float_weights]
    items = [
        {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
        for ids in calib.ids
    ]
    no_smooth_quant = AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1)
    )
    with _nncf_output_to_stderr():
        return nncf.quantize(
            model,
            nncf.Dataset(items),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(items),
            advanced_parameters=no_smooth_quant,
            ignored_scope=nncf.IgnoredScope(
                names=keep, patterns=[outlier_split.IGNORED_PATTERN], validate=False
            ),
        )


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


def compile_runner(
    workdir: Path,
    model: onnx.ModelProto,
    properties: EngineProperties,
    threads: int | None = None,
    bulk: bool = False,
) -> OpenVINORunner:
    """``model`` compiled with ``properties`` by the runtime's own OpenVINO runner: the export
    validates and times int8-ov and bf16 with the code and settings that will run them.
    ``bulk``: as ``Embedder.encode`` runs them (large calls in streams, on a twin compiled from
    the file later): the file is then named by its content, so no later candidate overwrites it."""
    import hashlib

    from ..runtime.openvino import OpenVINORunner

    data = model.SerializeToString()
    name = f"openvino-{hashlib.sha256(data).hexdigest()[:16]}.onnx" if bulk else "openvino-candidate.onnx"
    path = workdir / name
    if not (bulk and path.exists()):
        path.write_bytes(data)
    return OpenVINORunner(path, threads, properties.config(), bulk=bulk)


def openvino_embedder(
    workdir: Path, properties: EngineProperties, pad_id: int, threads: int | None = None
) -> Callable[[onnx.ModelProto, Tokenized], np.ndarray]:
    """``embed(model, tokenized)`` through OpenVINO's CPU plugin, batched as the runtime batches."""

    def embed(model: onnx.ModelProto, tok: Tokenized) -> np.ndarray:
        runner = compile_runner(workdir, model, properties, threads)
        dim = model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value  # [batch, dim] from append_head
        return embed_as_runtime(runner, tok, pad_id=pad_id, dim=dim)

    return embed


@dataclass
class OpenVinoInt8:
    model: onnx.ModelProto
    #: activation quantizers removed, with the measured reason
    unquantized: dict[str, str]
    trials: int
    #: MatMuls whose weights stayed float too (int8 weights alone missed the bar), with the reason
    float_weights: dict[str, str] = field(default_factory=dict)


def search(
    model: onnx.ModelProto,
    calib: Tokenized,
    embed: Callable[[onnx.ModelProto, Tokenized], np.ndarray],
    target: Bar,
) -> OpenVinoInt8:
    """Static int8 of ``model`` (fp32 with the pooling head), with the activation quantizers of
    the first roles of ``ROLE_ORDER`` removed: the fewest roles with which OpenVINO's output on the
    calibration texts meets ``target`` vs fp32.

    Every activation static first; then every one removed (int8 weights only). When even that
    misses, the roles of :data:`WEIGHT_ROLE_ORDER` keep float weights, one more per trial, until
    the target is met or every role is float (the caller's validation then decides). Otherwise the
    number of roles removed is bisected (a role removed never lowers fidelity much), about
    log2(roles) more trials."""
    from .progress import Progress
    from .reference import cosines

    reference = embed(model, calib)
    static = quantize_static(model, calib)
    quantizers = activation_quantizers(static)
    roles = [r for r in ROLE_ORDER if any(q.role == r for q in quantizers)]
    progress = Progress("int8-ov search trials", 2 + math.ceil(math.log2(max(2, len(roles)))), bound=True)
    trials = 0
    scores: dict[int, np.ndarray] = {}

    def removed_for(k: int) -> dict[str, str]:
        """The first ``k`` roles' quantizers, each with why (the score of the candidate before)."""
        out: dict[str, str] = {}
        for j, role in enumerate(roles[:k]):
            before = scores[max(x for x in scores if x <= j)]
            why = (
                f"role {role}: static scales missed the bar "
                f"(calibration min cos {before.min():.5f}, mean {before.mean():.5f})"
            )
            out |= {q.name: why for q in quantizers if q.role == role}
        return out

    def trial(k: int) -> bool:
        nonlocal trials
        trials += 1
        candidate = static if k == 0 else unquantize(static, set(removed_for(k)))
        c = cosines(embed(candidate, calib), reference)
        scores[k] = c
        static_left = sum(1 for q in quantizers if q.role not in roles[:k])
        passed = bool(c.min() >= target.min_cos and c.mean() >= target.mean_cos)
        log.info(
            "int8-ov: %d/%d activation quantizers static: calibration min cos %.5f, mean %.5f",
            static_left,
            len(quantizers),
            c.min(),
            c.mean(),
        )
        progress.step(f"{len(roles[:k])} of {len(roles)} roles float{': ok' if passed else ''}")
        return passed

    if trial(0) or not roles:
        return OpenVinoInt8(static, {}, trials)
    if not trial(len(roles)):
        # even int8 weights alone miss the target: nothing in between can pass; whole roles keep
        # float weights instead
        removed = removed_for(len(roles))
        return _float_weights(model, calib, embed, target, reference, scores[len(roles)], trials, removed)
    lo, hi = 0, len(roles)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if trial(mid):
            hi = mid
        else:
            lo = mid
    removed = removed_for(hi)
    return OpenVinoInt8(_final(static, removed), removed, trials)


def _float_weights(
    model: onnx.ModelProto,
    calib: Tokenized,
    embed: Callable[[onnx.ModelProto, Tokenized], np.ndarray],
    target: Bar,
    reference: np.ndarray,
    scores: np.ndarray,
    trials: int,
    removed: dict[str, str],
) -> OpenVinoInt8:
    """Weights-only int8 that missed ``target`` (calibration cosines ``scores``; ``removed``: its
    activation quantizers, every one float): the roles of :data:`WEIGHT_ROLE_ORDER` present in
    ``model`` keep float weights, one more per trial, until ``target`` is met; the last candidate
    tried when none meets it."""
    from .progress import Progress
    from .reference import cosines

    present = {role_of(n.name) for n in model.graph.node if n.op_type == "MatMul"}
    roles = [r for r in WEIGHT_ROLE_ORDER if r in present]
    progress = Progress("int8-ov float-weight trials", len(roles), bound=True)
    candidate = None
    kept: dict[str, str] = {}
    for k in range(1, len(roles) + 1):
        why = (
            f"weights float: int8 weights alone missed the bar "
            f"(calibration min cos {scores.min():.5f}, mean {scores.mean():.5f})"
        )
        static = quantize_static(model, calib, float_weights=tuple(roles[:k]))
        candidate = _final(static, {q.name: "" for q in activation_quantizers(static)})
        trials += 1
        c = cosines(embed(candidate, calib), reference)
        kept = {
            n.name: why for n in model.graph.node if n.op_type == "MatMul" and role_of(n.name) in roles[:k]
        }
        passed = bool(c.min() >= target.min_cos and c.mean() >= target.mean_cos)
        log.info(
            "int8-ov: int8 weights with %s float (%d MatMuls): calibration min cos %.5f, mean %.5f",
            "+".join(roles[:k]),
            len(kept),
            c.min(),
            c.mean(),
        )
        progress.step(f"{k} of {len(roles)} roles with float weights{': ok' if passed else ''}")
        if passed:
            break
        scores = c
    assert candidate is not None
    return OpenVinoInt8(candidate, removed, trials, kept)


def _final(static: onnx.ModelProto, removed: dict[str, str]) -> onnx.ModelProto:
    """The candidate without ``removed``'s quantizers and the outlier masks they made useless
    (exact: ``outlier_split.drop_unused_masks``)."""
    from . import outlier_split

    return outlier_split.drop_unused_masks(unquantize(static, set(removed)))
