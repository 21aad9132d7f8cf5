"""GPU check behind gpu_check.sh: fp16 on CUDA (IO binding) vs fp32 on CPU, then speed.

Fails (exit 1) when CUDA is not really used or parity misses the fp16 bar (min cos 0.9999).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="out/gpu-check")
    ap.add_argument("--report", default="out/gpu_check.json")
    ap.add_argument("--shape", default="dmeta", choices=["dmeta", "tiny"])
    a = ap.parse_args()

    import onnxruntime as ort

    from benchmarks.workloads import workload
    from dmeta_embed import Embedder
    from dmeta_embed.export import export_model
    from dmeta_embed.export.reference import cosines
    from tests.random_models import build_model

    report: dict = {"onnxruntime": ort.__version__, "providers": ort.get_available_providers()}
    work = Path(a.work)
    src = build_model(work / "src", a.shape)
    t = time.perf_counter()
    # fp16 is validated on CUDA by the exporter itself when CUDA is available
    m = export_model(str(src), work / "export", variants=["fp32", "fp16"], force=True)
    report["export_seconds"] = round(time.perf_counter() - t, 1)
    report["fp16_fidelity_in_manifest"] = m.variants["fp16"].fidelity.to_dict()
    report["fp16_validated_on"] = m.variants["fp16"].validated_on

    gpu = Embedder.load(work / "export", variant="fp16", provider="cuda")
    cpu = Embedder.load(work / "export", variant="fp32", provider="cpu")
    report["gpu_session_providers"] = gpu._runner.session.get_providers()
    texts = workload("mixed", 256, seed=11) + workload("long", 8, seed=11)
    c = cosines(gpu.encode(texts), cpu.encode(texts))
    report["parity_fp16_cuda_vs_fp32_cpu"] = {
        "min_cos": float(c.min()),
        "mean_cos": float(c.mean()),
        "n": len(texts),
        "max_tokens": max(gpu.count_tokens(texts)),
    }

    bulk = workload("mixed", 2048, seed=12)
    tokens = sum(gpu.count_tokens(bulk))
    gpu.encode(bulk[:256])
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        gpu.encode(bulk)
        runs.append(time.perf_counter() - t)
    report["throughput_mixed"] = {
        "texts": len(bulk),
        "tokens": tokens,
        "tokens_per_s": round(tokens / statistics.median(runs)),
        "texts_per_s": round(len(bulk) / statistics.median(runs)),
    }
    queries = workload("query", 220, seed=13)
    lat = []
    for q in queries:
        t = time.perf_counter()
        gpu.encode([q])
        lat.append((time.perf_counter() - t) * 1000)
    lat = sorted(lat[20:])
    report["query_latency_ms"] = {
        "p50": round(float(np.percentile(lat, 50)), 2),
        "p99": round(float(np.percentile(lat, 99)), 2),
    }
    Path(a.report).parent.mkdir(parents=True, exist_ok=True)
    Path(a.report).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    ok = (
        report["gpu_session_providers"][0] == "CUDAExecutionProvider"
        and report["parity_fp16_cuda_vs_fp32_cpu"]["min_cos"] >= 0.9999
    )
    print("GPU CHECK", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
