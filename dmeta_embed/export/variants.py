"""Derive the fp16 and int8 variants from the fused fp32 backbone.

int8 is dynamic quantization with per-channel signed weights, MatMul and Attention only (the
embedding tables stay fp32). Plain int8 misses the fidelity bar on real weights, so
:func:`search_int8` ranks the quantizable nodes by their end-to-end damage, measured on a session
that emulates int8 per node (``export.int8_search``), and keeps the fewest most-sensitive nodes in
fp32 that reach the bar.
"""

from __future__ import annotations

import collections
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..manifest import Bar
from .progress import Progress
from .reference import cosines

if TYPE_CHECKING:
    import onnx

    from ..runtime.tokenize import Tokenized

log = logging.getLogger(__name__)

QUANTIZABLE = ("MatMul", "Attention")


def to_fp16(backbone: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and compute; int64 inputs and the fp32 hidden-state output are kept, so the
    pooling/normalisation head appended afterwards runs in fp32. LayerNorm-type fused ops
    accumulate in fp32 inside ONNX Runtime's kernels."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    m = onnx.ModelProto()
    m.CopyFrom(backbone)
    om = OnnxModel(m)
    om.convert_float_to_float16(use_symbolic_shape_infer=True, keep_io_types=True)
    return om.model


def quantizable_nodes(backbone: onnx.ModelProto) -> list[str]:
    """MatMul nodes with a constant weight, and fused Attention nodes, in graph order."""
    inits = {i.name for i in backbone.graph.initializer}
    return [
        n.name
        for n in backbone.graph.node
        if n.op_type == "Attention" or (n.op_type == "MatMul" and n.input[1] in inits)
    ]


def quantize_int8(backbone: onnx.ModelProto, exclude: list[str], workdir: Path) -> onnx.ModelProto:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = workdir / "q.onnx"
    quantize_dynamic(
        backbone,
        out,
        op_types_to_quantize=list(QUANTIZABLE),
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
        # the fused graph lacks value_info for some weights; without this quantize_dynamic fails
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
    )
    return onnx.load(str(out))


@dataclass
class Int8Result:
    model: onnx.ModelProto
    #: nodes left in fp32, each with its measured sensitivity
    kept_float: dict[str, str]
    #: quantize-and-measure trials the search ran
    trials: int = 0


#: int8 ops and the input positions of their weight and its zero point
INT8_WEIGHT_INPUTS = {"MatMulInteger": (1, 3), "DynamicQuantizeMatMul": (1, 3), "QAttention": (1, 7)}


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


def target(bar: Bar) -> Bar:
    """A stricter bar for the calibration texts, so the probe set (the real test) passes."""
    return Bar(min_cos=1 - (1 - bar.min_cos) * 0.7, mean_cos=1 - (1 - bar.mean_cos) * 0.7)


def _badness(c: np.ndarray, goal: Bar) -> float:
    """How far cosines ``c`` are from perfect, in units of the target's allowance (1: at the bar)."""
    return max(
        (1 - float(c.min())) / max(1 - goal.min_cos, 1e-9),
        (1 - float(c.mean())) / max(1 - goal.mean_cos, 1e-9),
    )


def search_int8(
    backbone: onnx.ModelProto,
    evaluate: Callable[[onnx.ModelProto], np.ndarray],
    reference: np.ndarray,
    bar: Bar,
    *,
    calib: Tokenized | None = None,
    head: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None,
    pad_id: int = 0,
) -> Int8Result:
    """Quantize, keeping the fewest most-sensitive nodes in fp32 that reach ``bar`` (with margin)
    on the calibration texts ``evaluate`` embeds. ``reference``: fp32 embeddings of those texts.

    With ``calib`` (those texts' tokens) and ``head`` (appends the pooling head), the trials run on
    one emulating session (``export.int8_search.Emulator``: one pass each, no re-quantization):
    each node's damage when it alone is int8 (graphs up to 24 nodes), or, on larger graphs, each
    layer's and each role's (QKV, attention output, FFN in, FFN out) with the node ranked by the
    product of its layer's and its role's, each per node of the group: 12 + 4 passes on a BERT-base
    instead of 72 trials. The
    number kept in fp32 is then found by doubling and bisection on the ranked list, to within 1/24
    of the nodes, and checked with the real quantized graph (raised while that misses). Without
    them each node is ranked by one real trial of its own (slow: 83 trials on a BERT-base)."""
    goal = target(bar)
    nodes = quantizable_nodes(backbone)
    trials = 0
    tolerance = max(1, len(nodes) // 24)

    def score(m: onnx.ModelProto) -> np.ndarray:
        nonlocal trials
        trials += 1
        return cosines(evaluate(m), reference)

    def ok(c: np.ndarray) -> bool:
        return float(c.min()) >= goal.min_cos and float(c.mean()) >= goal.mean_cos

    with tempfile.TemporaryDirectory(prefix="dmeta-int8-") as tmp:
        work = Path(tmp)
        full = quantize_int8(backbone, [], work)
        c = score(full)
        log.info(
            "int8, all %d nodes quantized: min cos %.5f mean %.5f (target %.5f / %.5f)",
            len(nodes),
            c.min(),
            c.mean(),
            goal.min_cos,
            goal.mean_cos,
        )
        if ok(c):
            return Int8Result(full, {}, trials)

        if calib is not None and head is not None:
            # on every calibration text: ranked on the 16 that full int8 damages most, the last two
            # nodes of real MPNet's ranking took min cos to 0.992 on another text (the bisection
            # then kept all 72 in fp32)
            ranked, sens, measure = _rank_emulated(backbone, nodes, calib, head, pad_id, reference, goal)
        else:
            ranked, sens, measure = _rank_by_trials(backbone, nodes, work, score, goal)

        # doubling, then bisection, for the smallest k that passes (damage is ~additive in k)
        progress = Progress("int8: kept-fp32 count", 2 * math.ceil(math.log2(max(2, len(nodes)))), bound=True)

        def passes(k: int) -> bool:
            c = measure(ranked[:k])
            progress.step(
                f"{k} kept fp32: min cos {c.min():.5f}, mean {c.mean():.5f}{', ok' if ok(c) else ''}"
            )
            return ok(c)

        lo, hi = 0, 1
        while hi < len(nodes) and not passes(hi):
            lo, hi = hi, hi * 2
        hi = min(hi, len(nodes))
        while hi - lo > tolerance:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if passes(mid) else (mid, hi)
        k = hi
        while True:  # the real graph: emulation is exact up to rounding, but check
            model = quantize_int8(backbone, ranked[:k], work) if k < len(nodes) else backbone
            c = score(model)
            log.info("int8: %d most sensitive nodes kept fp32: min cos %.5f mean %.5f", k, c.min(), c.mean())
            if ok(c) or k >= len(nodes):
                break
            k = min(len(nodes), k + tolerance)
        kept = {
            n: f"sensitivity {sens[n]:.2e} (rank {i + 1} of {len(nodes)})" for i, n in enumerate(ranked[:k])
        }
        log.info("int8: kept %d of %d nodes in fp32 after %d trials", k, len(nodes), trials)
        return Int8Result(model, kept, trials)


def _rank_emulated(
    backbone: onnx.ModelProto,
    nodes: list[str],
    calib: Tokenized,
    head: Callable[[onnx.ModelProto], onnx.ModelProto],
    pad_id: int,
    reference: np.ndarray,
    goal: Bar,
) -> tuple[list[str], dict[str, float], Callable[[list[str]], np.ndarray]]:
    from .int8_search import Emulator, layer_groups
    from .openvino import role_of

    emu = Emulator(head(backbone), nodes, calib, pad_id)
    by_name = {n.name: n for n in backbone.graph.node}

    def measure(kept: list[str]) -> np.ndarray:
        keep = set(kept)
        return cosines(emu.run(n for n in nodes if n not in keep), reference)

    def damage(group: list[str]) -> float:
        return _badness(cosines(emu.run(group), reference), goal)

    if len(nodes) <= 24:
        progress = Progress("int8: node damage", len(nodes))
        sens = {}
        for n in nodes:
            sens[n] = damage([n])
            progress.step(n)
    else:
        layers = layer_groups(backbone, nodes)
        roles = {n: "qkv" if by_name[n].op_type == "Attention" else role_of(n) for n in nodes}
        groups = [("layer", v) for v in sorted(set(layers.values()))] + [
            ("role", r) for r in sorted(set(roles.values()))
        ]
        progress = Progress("int8: layer and role damage", len(groups))
        d: dict[tuple[str, object], float] = {}
        for kind, value in groups:
            members = [n for n in nodes if (layers[n] if kind == "layer" else roles[n]) == value]
            d[(kind, value)] = damage(members)
            progress.step(f"{kind} {value}: {d[(kind, value)]:.3g}")
        # additive damage, separable per node as a(layer) * b(role): a group's damage sums its
        # members', so each factor is its group's damage over the group's size (Q, K and V are
        # 3 nodes a layer, the others 1: unnormalised, QKV would rank three times too high)
        size = collections.Counter(
            [("layer", layers[n]) for n in nodes] + [("role", roles[n]) for n in nodes]
        )
        sens = {
            n: d[("layer", layers[n])]
            / size[("layer", layers[n])]
            * d[("role", roles[n])]
            / size[("role", roles[n])]
            for n in nodes
        }
    # a node the emulator cannot switch alone (a shared weight) is ranked first: kept fp32 early
    top = max(sens.values(), default=1.0) + 1
    sens |= {n: top for n in nodes if n not in emu.nodes}
    return sorted(nodes, key=lambda n: -sens[n]), sens, measure


def _rank_by_trials(
    backbone: onnx.ModelProto,
    nodes: list[str],
    work: Path,
    score: Callable[[onnx.ModelProto], np.ndarray],
    goal: Bar,
) -> tuple[list[str], dict[str, float], Callable[[list[str]], np.ndarray]]:
    progress = Progress("int8: node damage (one real trial each)", len(nodes))
    sens = {}
    for n in nodes:
        sens[n] = _badness(score(quantize_int8(backbone, [x for x in nodes if x != n], work)), goal)
        progress.step(n)
    return (
        sorted(nodes, key=lambda n: -sens[n]),
        sens,
        lambda kept: score(quantize_int8(backbone, kept, work)),
    )
