"""Timing loops run inside one system's worker process: bulk throughput and single-text latency
(percentiles and RSS come from ``benchmarks.timing``). No statistics beyond medians and
percentiles; ratios are made by the parent."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .timing import rss_mb

Encode = Callable[[list[str]], np.ndarray]


def time_bulk(
    encode: Encode, texts: list[str], repeats: int, warmup: int = 1
) -> tuple[list[float], list[float], list[float], np.ndarray]:
    """Seconds of ``warmup`` + ``repeats`` full passes over ``texts`` (each pass one ``encode``
    call); returns (warm-up seconds, repeat seconds, CPU-seconds per second of each repeat, the
    last pass's embeddings). CPU/wall is this process's CPU time (all threads) over wall time: a
    2-thread engine that has the machine to itself shows ~2; less means it waited for the CPU
    (other work on a shared machine) or ran serial code."""
    warm, runs, cpu = [], [], []
    emb = np.empty((0, 0), dtype=np.float32)
    for i in range(warmup + repeats):
        gc.collect()
        c, t = time.process_time(), time.perf_counter()
        emb = encode(texts)
        wall = time.perf_counter() - t
        if i < warmup:
            warm.append(wall)
        else:
            runs.append(wall)
            cpu.append((time.process_time() - c) / wall)
    return warm, runs, cpu, np.asarray(emb, dtype=np.float32)


def time_latency(
    encode: Encode, texts: list[str], calls: int, warmup: int = 10, offset: int = 0
) -> list[float]:
    """Milliseconds of ``calls`` single-text ``encode([text])`` calls, cycling through ``texts`` in
    order from ``offset``, after ``warmup`` untimed calls."""
    for i in range(min(warmup, calls)):
        encode([texts[i % len(texts)]])
    gc.collect()
    out = []
    for i in range(calls):
        text = texts[(offset + i) % len(texts)]
        t = time.perf_counter()
        encode([text])
        out.append((time.perf_counter() - t) * 1e3)
    return out


def measure_workload(
    encode: Encode,
    texts: list[str],
    dim: int,
    repeats: int,
    latency_calls: int,
    save_to: Path | None = None,
    latency_offset: int = 0,
) -> dict[str, Any]:
    """Throughput passes (after one warm-up pass) and single-text latency, raw: the parent pools
    them over passes and takes medians / percentiles."""
    warm, runs, cpu, emb = time_bulk(encode, texts, repeats)
    if emb.shape != (len(texts), dim):
        raise ValueError(f"encode returned shape {emb.shape}, expected {(len(texts), dim)}")
    if not np.isfinite(emb).all():
        raise ValueError("encode returned non-finite values")
    if save_to is not None:
        np.save(save_to, emb)
    lat = time_latency(encode, texts, latency_calls, offset=latency_offset) if latency_calls > 0 else []
    return {
        "bulk_warmup_s": [round(x, 4) for x in warm],
        "bulk_s": [round(x, 4) for x in runs],
        "bulk_cpu_per_wall": [round(x, 2) for x in cpu],
        "latency_raw_ms": [round(x, 3) for x in lat],
        "rss_after_mb": rss_mb(),
    }
