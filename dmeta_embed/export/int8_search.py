"""Which weight format each MatMul of the per-row int8 graph gets, searched on the model's weights.

Every node starts in the cheapest format this CPU computes exactly and fast (``ladder``): s8 where
the u8×s8 kernels accumulate in int32, s7 where they saturate (x86 without VNNI). When the whole
graph misses the bar on the calibration texts, nodes are promoted one rung at a time (s7 → u8 →
fp32, or s8 → fp32), most damaging first. The damage of each node is estimated from sampled
activations in numpy (``int8_calibration.node_errors``: no graph, no session), and the number of
promotions is found by doubling and bisection with real graphs: a handful of trials, where ranking
each node by a trial of its own took more trials than the model has nodes (docs/export.md,
"Fidelity").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..manifest import Bar
from ..runtime.cpu import U8_SHIFT, CpuInfo
from .progress import Progress

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

FP32 = "fp32"


def ladder(cpu: CpuInfo) -> tuple[str, ...]:
    """The formats a node may take on ``cpu``, fastest first, ending in fp32: the weight format,
    with ``/asym`` where the node's rows become asymmetric whatever their shape (one more bit for
    the rows of the nodes that need it, at the price of an int32 correction pass), ``/a7`` where
    they are asymmetric in 7 bits."""
    if cpu.cpu_class in U8_SHIFT:
        # 8-bit s8 weights beside 8-bit rows saturate u8×s8's int16 pair sums here, and the u8
        # shift that makes them exact runs the slower u8×u8 kernels. Fast and exact: 7-bit
        # weights (s7); u8 (the shift, built in) for the nodes that need the 8th bit. 7-bit rows
        # beside 8-bit weights (s8/a7) were tried as a middle rung on real weights and helped no
        # more than u8 did (docs/performance.md, "Why int8 gains little on AVX2" for the kernel
        # rates, "Choosing the recipe" for the rungs)
        return ("s7", "u8/asym", FP32)
    return ("s8", "s8/asym", FP32)


def weight_format(rung: str) -> str:
    """How a rung's weights are counted in the manifest: ``"u8/asym"`` → ``"u8"``, and
    ``"s8/a7"`` → ``"s8a7"`` (8-bit s8 weights that cannot saturate: their rows are 7-bit)."""
    fmt, _, rows = rung.partition("/")
    return fmt + rows if rows == "a7" else fmt


@dataclass
class RowSearch:
    """The search's result: the graph, each node's format where it is not the first rung, why."""

    model: onnx.ModelProto
    default: str
    formats: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    trials: int = 0

    def counts(self, nodes: Sequence[str]) -> dict[str, int]:
        """Nodes per format (fp32 included)."""
        out: dict[str, int] = {}
        for n in nodes:
            f = self.formats.get(n, self.default)
            out[f] = out.get(f, 0) + 1
        return out


def _ok(c: np.ndarray, goal: Bar) -> bool:
    return float(c.min()) >= goal.min_cos and float(c.mean()) >= goal.mean_cos


def search(
    nodes: Sequence[str],
    build: Callable[[dict[str, str]], onnx.ModelProto],
    score: Callable[[onnx.ModelProto], np.ndarray],
    goal: Bar,
    rungs: Sequence[str],
    damage: dict[str, float],
) -> RowSearch:
    """The fewest promotions (in ``damage`` order, one rung of ``rungs`` at a time) whose graph
    reaches ``goal`` on the calibration texts. ``build(formats)``: the graph with those formats
    (nodes not named take ``rungs[0]``); ``score(model)``: its cosines against the fp32 reference."""
    trials = 0

    def trial(formats: dict[str, str]) -> tuple[onnx.ModelProto, np.ndarray]:
        nonlocal trials
        trials += 1
        m = build(formats)
        return m, score(m)

    model, c = trial({})
    log.info(
        "int8 (per-row, %s weights), all %d nodes: min cos %.5f mean %.5f (target %.5f / %.5f)",
        rungs[0],
        len(nodes),
        c.min(),
        c.mean(),
        goal.min_cos,
        goal.mean_cos,
    )
    if _ok(c, goal):
        return RowSearch(model, rungs[0], trials=trials)
    del model  # not held through the search (see results below)

    ranked = sorted(nodes, key=lambda n: -damage[n])
    steps = [(n, rung) for rung in rungs[1:] for n in ranked]

    def formats_at(k: int) -> dict[str, str]:
        return dict(steps[:k])  # a later rung of the same node overrides the earlier one

    tolerance = max(1, len(nodes) // 24)
    progress = Progress("int8: promotions", 2 * math.ceil(math.log2(max(2, len(steps)))), bound=True)
    # each trial's cosines only: keeping every trial's graph made the search the export's memory
    # peak on a base-size model (docs/export.md, "Fidelity"); the chosen graph is built once more
    results: dict[int, np.ndarray] = {}

    def passes(k: int) -> bool:
        c = results[k] = trial(formats_at(k))[1]
        progress.step(
            f"{k} promoted: min cos {c.min():.5f}, mean {c.mean():.5f}{', ok' if _ok(c, goal) else ''}"
        )
        return _ok(c, goal)

    lo, hi = 0, 1
    while hi < len(steps) and not passes(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, len(steps))
    if hi == len(steps) and hi not in results:
        passes(hi)
    while hi - lo > tolerance:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if passes(mid) else (mid, hi)
    if hi not in results:
        passes(hi)
    formats = formats_at(hi)
    model, c = build(formats), results[hi]
    reasons = {
        n: f"{f}: damage {damage[n]:.2e} (rank {ranked.index(n) + 1} of {len(nodes)})"
        for n, f in formats.items()
    }
    log.info(
        "int8: %d promotions (%s) after %d trials: min cos %.5f mean %.5f",
        hi,
        ", ".join(f"{v} {k}" for k, v in sorted(RowSearch(model, rungs[0], formats).counts(nodes).items())),
        trials,
        c.min(),
        c.mean(),
    )
    return RowSearch(model, rungs[0], formats, reasons, trials)
