"""The export's speed record: bulk tokens/s against fp32, and the one-text latency a server's
``auto`` ranks by (``query_ms``)."""

from __future__ import annotations

import time

import pytest

from dmeta_embed.export.speed import (
    FP32,
    QUERY_CALLS,
    QUERY_LENGTHS,
    Pass,
    SpeedRun,
    anchored,
    measure,
    query_ids,
)
from dmeta_embed.manifest import Precision
from dmeta_embed.variant_records import EngineProperties, InferencePrecision, Speed


def test_query_ids_are_short_texts_of_the_listed_lengths() -> None:
    long_text = [101, *range(1000, 1100), 102]
    short_text = [101, 7, 8, 102]
    got = query_ids([long_text, short_text], n=12)
    assert len(got) == 12
    for i, ids in enumerate(got):
        source = (long_text, short_text)[i % 2]
        assert len(ids) == min(QUERY_LENGTHS[i % len(QUERY_LENGTHS)], len(source))
        assert ids[0] == 101 and ids[-1] == 102  # [CLS] … [SEP] kept
        assert ids[1:-1] == source[1 : len(ids) - 1]


def test_measure_times_single_queries_of_a_pass_only() -> None:
    calls: dict[str, list[int]] = {"slow": [], "fast": []}

    def query(name: str, seconds: float):  # type: ignore[no-untyped-def]
        def q(i: int) -> None:
            calls[name].append(i)
            time.sleep(seconds)

        return q

    slow = SpeedRun(Precision.INT8)
    fast = SpeedRun(Precision.BF16, EngineProperties(InferencePrecision.BF16))
    runs = {
        FP32: lambda: time.sleep(0.002),  # a plain callable: bulk only
        slow: Pass(lambda: time.sleep(0.001), query("slow", 0.004)),
        fast: Pass(lambda: time.sleep(0.001), query("fast", 0.0)),
    }
    out = measure(runs, tokens=1000, cpu_class="amx", rounds=2)
    assert out[FP32].query_ms is None and "query_ms" not in out[FP32].to_dict()
    # warm-up once over every query, then QUERY_CALLS per round, in order
    for name in calls:
        assert calls[name] == list(range(QUERY_CALLS)) * 3
    assert out[slow].query_ms is not None and out[fast].query_ms is not None
    assert out[slow].query_ms >= 4.0 > out[fast].query_ms
    assert out[slow].vs_fp32 > 1.0 and out[slow].measured_on("amx") and out[slow].engine == "onnxruntime"
    assert fast.label == "bf16+bf16" and out[fast].engine == "openvino"


def test_measure_needs_the_fp32_baseline() -> None:
    with pytest.raises(ValueError, match="fp32 baseline"):
        measure({SpeedRun(Precision.INT8): Pass(lambda: None)}, tokens=10, cpu_class="amx")


def test_runs_timed_apart_are_put_on_the_scale_of_fp32s_fastest_rounds() -> None:
    """Each variant is timed beside fp32 in its own rounds: its rate and latency are scaled by
    fp32's best over fp32's in those rounds, so ``tokens_per_s`` compares across variants (and
    with fp32's) as ``vs_fp32`` says, however busy the machine was for each."""
    int8 = SpeedRun(Precision.INT8)
    bf16 = SpeedRun(Precision.BF16, EngineProperties(InferencePrecision.BF16))
    busy = Speed(tokens_per_s=500, vs_fp32=1.0, query_ms=40.0)
    quiet = Speed(tokens_per_s=1000, vs_fp32=1.0, query_ms=20.0)
    out = anchored(
        {
            int8: (Speed(tokens_per_s=750, vs_fp32=1.5, query_ms=30.0, engine="onnxruntime"), busy),
            bf16: (Speed(tokens_per_s=3000, vs_fp32=3.0, query_ms=10.0, engine="openvino"), quiet),
        }
    )
    assert out[FP32] == quiet
    assert out[int8] == Speed(tokens_per_s=1500, vs_fp32=1.5, query_ms=15.0, engine="onnxruntime")
    assert out[bf16].tokens_per_s == 3000 and out[bf16].query_ms == 10.0
    assert anchored({}) == {}
