"""The int8-ov search: static int8 with NNCF, then activation quantizers removed role by role
(and, where int8 weights alone miss, whole roles' weights kept float) until the calibration texts
meet the bar with margin (docs/export.md, "Fidelity")."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..manifest import Bar
from .openvino import (
    EMBEDDINGS,
    ROLE_ORDER,
    WEIGHT_ROLE_ORDER,
    activation_quantizers,
    embedding_lookups,
    quantize_static,
    role_of,
    unquantize,
)

if TYPE_CHECKING:
    import onnx

    from ..runtime.tokenize import Tokenized

log = logging.getLogger(__name__)


@dataclass
class OpenVinoInt8:
    model: onnx.ModelProto
    #: activation quantizers removed, with the measured reason
    unquantized: dict[str, str]
    trials: int
    #: MatMuls whose weights stayed float too (int8 weights alone missed the bar), with the reason
    float_weights: dict[str, str] = field(default_factory=dict)


def search(
    model: onnx.ModelProto | Path,
    calib: Tokenized,
    embed: Callable[[onnx.ModelProto | Path, Tokenized], np.ndarray],
    target: Bar,
    workdir: Path | None = None,
    agreement: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> OpenVinoInt8:
    """Static int8 of ``model`` (fp32 with the pooling head; a graph, or its file, loaded only
    while a trial quantizes it), with the activation quantizers of the first roles of
    ``ROLE_ORDER`` removed: the fewest roles with which OpenVINO's output on the calibration texts
    meets ``target`` vs fp32. ``workdir``: where NNCF reads the weights from (:func:`_nncf`).

    Every activation static first; then every one removed (int8 weights only). When even that
    misses, the roles of :data:`WEIGHT_ROLE_ORDER` keep float weights, one more per trial, until
    the target is met or every role is float (the caller's validation then decides). Otherwise the
    number of roles removed is bisected (a role removed never lowers fidelity much), about
    log2(roles) more trials. ``agreement(candidate, reference)``: the per-row number held to
    ``target`` (default: cosines; a reranker's: 1 − its largest score difference)."""
    import onnx

    from . import outlier_split
    from .progress import Progress
    from .reference import cosines

    agreement = agreement or cosines

    reference = embed(model, calib)
    fp32 = onnx.load(str(model)) if isinstance(model, Path) else model
    # one fp32 pass finds the outlier channels of every trial (each quantizes the same model)
    amax = outlier_split.activation_absmax(fp32, calib, workdir)
    matmuls = [n.name for n in fp32.graph.node if n.op_type == "MatMul"]
    lookups = embedding_lookups(fp32)
    del fp32
    static = quantize_static(model, calib, amax=amax, workdir=workdir)
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
        c = agreement(embed(candidate, calib), reference)
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
        del static  # each float-weight trial quantizes anew
        return _float_weights(
            model,
            matmuls,
            lookups,
            calib,
            embed,
            target,
            reference,
            scores[len(roles)],
            trials,
            removed,
            amax,
            workdir,
            agreement,
        )
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
    model: onnx.ModelProto | Path,
    matmuls: list[str],
    lookups: list[str],
    calib: Tokenized,
    embed: Callable[[onnx.ModelProto | Path, Tokenized], np.ndarray],
    target: Bar,
    reference: np.ndarray,
    scores: np.ndarray,
    trials: int,
    removed: dict[str, str],
    amax: dict[str, np.ndarray],
    workdir: Path | None,
    agreement: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> OpenVinoInt8:
    """Weights-only int8 that missed ``target`` (calibration cosines ``scores``; ``removed``: its
    activation quantizers, every one float): the roles of :data:`WEIGHT_ROLE_ORDER` present in
    ``model`` keep float weights, one more per trial, then the embedding tables (``lookups``),
    until ``target`` is met; the last candidate tried when none meets it."""
    from .progress import Progress

    present = {role_of(n) for n in matmuls}
    roles = [r for r in WEIGHT_ROLE_ORDER if r in present] + ([EMBEDDINGS] if lookups else [])
    progress = Progress("int8-ov float-weight trials", len(roles), bound=True)
    candidate = None
    kept: dict[str, str] = {}
    for k in range(1, len(roles) + 1):
        why = (
            f"weights float: int8 weights alone missed the bar "
            f"(calibration min cos {scores.min():.5f}, mean {scores.mean():.5f})"
        )
        candidate = None  # the last trial's graph is dropped before the next one is built
        static = quantize_static(model, calib, float_weights=tuple(roles[:k]), amax=amax, workdir=workdir)
        candidate = _final(static, {q.name: "" for q in activation_quantizers(static)})
        del static
        trials += 1
        c = agreement(embed(candidate, calib), reference)
        kept = {n: why for n in matmuls if role_of(n) in roles[:k]}
        if EMBEDDINGS in roles[:k]:
            kept |= dict.fromkeys(lookups, why)
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
