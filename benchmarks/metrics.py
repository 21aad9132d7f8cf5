"""Fidelity metrics (cosine vs the reference, top-k neighbour agreement) and the FLOP model.

Plain numpy functions, so the tests can check them on hand-made vectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two ``(n, d)`` arrays, in float64; rows need not be normalised. The export's
    fidelity metric (``dmeta_embed.export.reference.cosines``), refusing arrays of different shapes."""
    from dmeta_embed.export.reference import cosines as export_cosines  # pulls in onnxruntime: not at import

    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    return export_cosines(a, b)


def top_k_neighbours(emb: np.ndarray, k: int) -> np.ndarray:
    """Indices ``(n, k)`` of each row's ``k`` most cosine-similar other rows (self excluded),
    best first; ties broken by the lower index so the result is deterministic."""
    n = emb.shape[0]
    if not 0 < k < n:
        raise ValueError(f"k must be in 1..{n - 1} for {n} rows, got {k}")
    x = emb.astype(np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    # stable argsort of -sim: equal scores keep index order
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]  # type: ignore[no-any-return]


def neighbour_agreement(candidate: np.ndarray, reference: np.ndarray, k: int = 10) -> float:
    """Mean over texts of |top-k(candidate) ∩ top-k(reference)| / k: 1.0 means every text has the
    same k nearest neighbours (as a set) under both embeddings. ``k`` shrinks to n-1 for tiny sets."""
    k = min(k, candidate.shape[0] - 1)
    a, b = top_k_neighbours(candidate, k), top_k_neighbours(reference, k)
    overlap = [len(set(ra.tolist()) & set(rb.tolist())) for ra, rb in zip(a, b, strict=True)]
    return float(np.mean(overlap) / k)


def fidelity(candidate: np.ndarray, reference: np.ndarray, k: int = 10) -> dict[str, float]:
    """min / mean cosine against the reference, and top-k neighbour agreement."""
    c = cosines(candidate, reference)
    return {
        "min_cos": float(c.min()),
        "mean_cos": float(c.mean()),
        f"top{k}_agreement": neighbour_agreement(candidate, reference, k),
        "k": min(k, len(c) - 1),
        "n_texts": len(c),
    }


# --- the FLOP model ------------------------------------------------------------------------------


def flops_per_sequence(tokens: int, layers: int, hidden: int, intermediate: int) -> float:
    """Forward FLOPs (multiply-add = 2) of one BERT encoder pass over ``tokens`` real tokens.

    Per layer and token: Q, K, V and output projections 4·h², FFN 2·h·i, i.e. 2·(4h² + 2hi) FLOPs;
    attention scores and the weighted sum add 2·2·L·h per token. Embeddings, LayerNorm, softmax
    and GELU are < 1 % and left out; padding is not counted (it is work a smarter batcher skips).
    """
    dense = 2.0 * (4 * hidden * hidden + 2 * hidden * intermediate) * tokens
    attention = 4.0 * tokens * tokens * hidden
    return float(layers * (dense + attention))


def workload_flops(lengths: Iterable[int], config: Mapping[str, Any]) -> float:
    """Total FLOPs to embed texts of the given (truncated) token lengths once."""
    layers, hidden = int(config["num_hidden_layers"]), int(config["hidden_size"])
    inter = int(config["intermediate_size"])
    return sum(flops_per_sequence(int(n), layers, hidden, inter) for n in lengths)


#: operations per cycle per core: (flags that must all be present, ops/cycle, note)
PEAK_UNITS: dict[str, tuple[tuple[str, ...], int, str]] = {
    # 2 FMA ports × 16 fp32 lanes × 2 (mul+add); single-FMA SKUs have half
    "fp32": (("avx512f",), 64, "AVX-512 FMA, 2 ports × 16 lanes × 2"),
    # VPDPBUSD: 64 u8·s8 MACs per 512-bit instruction, 2 ports
    "int8": (("avx512_vnni",), 256, "AVX-512 VNNI, 2 ports × 64 MACs × 2"),
    # AMX TMUL: 1024 int8 MACs / cycle; 512 bf16 MACs / cycle
    "int8_amx": (("amx_int8", "amx_tile"), 2048, "AMX-INT8, 1024 MACs × 2"),
    "bf16_amx": (("amx_bf16", "amx_tile"), 1024, "AMX-BF16, 512 MACs × 2"),
    # fallbacks for CPUs without AVX-512
    "fp32_avx2": (("avx2", "fma"), 32, "AVX2 FMA, 2 ports × 8 lanes × 2"),
}


def peak_gops(flags: Iterable[str], ghz: float, cores: int) -> dict[str, dict[str, Any]]:
    """Theoretical peak GOP/s per precision from CPU flags, clock and core count (an estimate:
    it assumes two FMA ports and the given clock under load, which turbo and AVX-512 licence
    levels move by ±30 %)."""
    have = set(flags)
    out: dict[str, dict[str, Any]] = {}
    for name, (need, per_cycle, note) in PEAK_UNITS.items():
        if all(f in have for f in need):
            out[name] = {
                "gops": round(per_cycle * ghz * cores, 1),
                "ops_per_cycle_per_core": per_cycle,
                "unit": note,
            }
    if "fp32" in out:
        out.pop("fp32_avx2", None)
    elif "fp32_avx2" in out:
        out["fp32"] = out.pop("fp32_avx2")
    return out


def peak_for(precision: str, peaks: Mapping[str, Mapping[str, Any]]) -> tuple[str, float] | None:
    """The peak a system of ``precision`` could at best reach: AMX where the CPU has it."""
    order = {
        "int8": ("int8_amx", "int8", "fp32"),
        "bf16": ("bf16_amx", "fp32"),
        "fp16": ("fp32",),
        "fp32": ("fp32",),
    }.get(precision, ("fp32",))
    for name in order:
        if name in peaks:
            return name, float(peaks[name]["gops"])
    return None
