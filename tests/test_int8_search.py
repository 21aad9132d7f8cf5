"""The per-row int8 search (export.int8_search) on synthetic graphs whose damage is known, and the
weight-format ladder each CPU class gets. No model: the build and score functions are stand-ins."""

from __future__ import annotations

import numpy as np
import pytest

from dmeta_embed.export import int8_search
from dmeta_embed.manifest import Bar
from dmeta_embed.runtime.cpu import CpuClass, CpuInfo

GOAL = Bar(min_cos=0.99, mean_cos=0.995)
NODES = [f"n{i}" for i in range(12)]
# damage each node does at each rung (1 - cos contributed): additive, as the search assumes
COST = {"s7": 0.004, "u8": 0.001, "fp32": 0.0}
HEAVY = {"n3": 6.0, "n7": 4.0, "n1": 2.0}  # these nodes are worse than the others by this factor


def _loss(formats: dict[str, str]) -> float:
    return sum(COST[formats.get(n, "s7")] * HEAVY.get(n, 1.0) for n in NODES)


def _run(goal: Bar, damage: dict[str, float]) -> tuple[int8_search.RowSearch, list[dict[str, str]]]:
    built: list[dict[str, str]] = []

    def build(formats):
        built.append(dict(formats))
        return formats  # the "model" is its formats

    def score(model):
        loss = _loss(model)
        return np.array([1 - loss, 1 - loss / 4])  # min and a milder mean

    return int8_search.search(NODES, build, score, goal, ("s7", "u8", "fp32"), damage), built


def test_no_promotion_when_everything_passes() -> None:
    found, built = _run(Bar(min_cos=0.9, mean_cos=0.9), {n: 1.0 for n in NODES})
    assert found.formats == {} and found.trials == 1 and built == [{}]
    assert found.counts(NODES) == {"s7": 12}


def test_promotes_the_most_damaging_first_and_the_fewest_that_pass() -> None:
    damage = {n: HEAVY.get(n, 1.0) for n in NODES}
    # all s7: loss 0.004 * (6 + 4 + 2 + 9) = 0.084; goal min 0.99 -> loss <= 0.01
    found, built = _run(Bar(min_cos=0.99, mean_cos=0.99), damage)
    assert _loss(found.formats) <= 0.01
    # the graph returned is the chosen formats' own, built once more at the end (trials keep
    # only their scores, not their graphs)
    assert found.model == found.formats and built[-1] == found.formats
    assert len(built) == found.trials + 1
    # the ranking is by damage: the promoted set is a prefix of n3, n7, n1, then the rest
    promoted = list(found.formats)
    assert promoted[:3] == ["n3", "n7", "n1"]
    # every node to u8 gives 0.021: not enough, so some reach fp32, again the heaviest first
    assert found.formats["n3"] == "fp32"
    assert set(found.formats.values()) <= {"u8", "fp32"}
    # the fewest to within the tolerance (12 nodes: one step)
    steps = [(n, r) for r in ("u8", "fp32") for n in sorted(NODES, key=lambda n: -damage[n])]
    k = len(promoted) + sum(1 for f in found.formats.values() if f == "fp32")
    assert _loss(dict(steps[: k - 2])) > 0.01
    assert all("damage" in r and "rank" in r for r in found.reasons.values())
    assert found.counts(NODES).get("s7", 0) == 12 - len(found.formats)


def test_everything_float_when_nothing_else_passes() -> None:
    found, _ = _run(Bar(min_cos=0.99999, mean_cos=0.99999), {n: 1.0 for n in NODES})
    assert found.formats == {n: "fp32" for n in NODES}
    assert found.counts(NODES) == {"fp32": 12}


@pytest.mark.parametrize(
    "cls,first",
    [
        (CpuClass.AVX2, "s7"),
        (CpuClass.AVX512, "s7"),
        (CpuClass.X86, "s7"),
        (CpuClass.AMX, "s8"),
        (CpuClass.AVX512_VNNI, "s8"),
        (CpuClass.AVX_VNNI, "s8"),
        (CpuClass.ARM64, "s8"),
    ],
)
def test_ladder_per_class(cls: CpuClass, first: str) -> None:
    """s8 only where u8×s8 accumulates in int32; 7-bit weights (which never saturate) elsewhere."""
    rungs = int8_search.ladder(CpuInfo(cls))
    assert rungs[0] == first and rungs[-1] == "fp32"
    formats = [int8_search.weight_format(r) for r in rungs[:-1]]
    # where u8×s8 saturates: 8-bit weights only as u8 (u8×u8 kernels), never plain s8
    assert ("u8" in formats) == (first == "s7") and ("s8" in formats) == (first == "s8")
    # the second rung gives the node asymmetric rows
    assert rungs[1].endswith(("/asym", "/a7"))
