"""One system in its own process: ``python -m benchmarks.worker JOB.json RESULT.json``.

Modes: ``prepare`` (one-time exports of a peer), ``measure`` (cold start, then every workload),
``reference`` (the fp32 PyTorch embeddings fidelity is measured against). The result file always
gets written: ``status`` ok | skipped (with ``reason``) | failed (with ``error``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

# numpy only at module level: what a system imports is part of its cold start


def _reference(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from dmeta_embed.export.reference import torch_embeddings
    from dmeta_embed.manifest import Pooling

    ctx = job["context"]
    out: dict[str, Any] = {"seconds": {}}
    for name, texts in job["workloads"].items():
        t = time.perf_counter()
        emb = torch_embeddings(
            Path(ctx["source_dir"]), texts, Pooling(ctx["pooling"]), ctx["normalize"], ctx["max_length"]
        )
        np.save(Path(job["emb_dir"]) / f"reference.{name}.npy", emb)
        out["seconds"][name] = round(time.perf_counter() - t, 2)
    return out


def _measure(job: dict[str, Any], stem: str, adapter: Any) -> dict[str, Any]:
    from .harness import measure_workload
    from .timing import peak_rss_mb, rss_mb

    t = time.perf_counter()
    adapter.load()
    first = adapter.encode([job["first_text"]])
    # cold start: process spawn (interpreter, imports) → load → first embedding, wall clock
    cold = time.time() - float(job["spawn_time"])
    out: dict[str, Any] = {
        "load_s": round(cold, 3),
        "load_in_process_s": round(time.perf_counter() - t, 3),
        "rss_after_load_mb": rss_mb(),
        "dim": int(first.shape[-1]),
        "info": adapter.info,
        "workloads": {},
    }
    for name, texts in job["workloads"].items():
        out["workloads"][name] = measure_workload(
            adapter.encode,
            texts,
            int(job["context"]["dim"]),
            job["repeats"],
            job["latency_calls"],
            save_to=Path(job["emb_dir"]) / f"{stem}.{name}.npy",
            latency_offset=job.get("latency_offset", 0),
        )
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def run(job: dict[str, Any]) -> dict[str, Any]:
    from .systems import INSTALL_HINT, Context, System, Unavailable, make_adapter

    mode = job["mode"]
    if mode == "reference":
        return {"status": "ok", **_reference(job)}
    system = System.from_dict(job["system"])
    try:
        adapter = make_adapter(system, Context.from_dict(job["context"]))
        if mode == "prepare":
            t = time.perf_counter()
            info = adapter.prepare()
            return {"status": "ok", "prepare_s": round(time.perf_counter() - t, 2), "info": info}
        return {"status": "ok", **_measure(job, system.stem, adapter)}
    except Unavailable as e:
        return {"status": "skipped", "reason": str(e)}
    except ImportError as e:
        return {"status": "skipped", "reason": f"not installed: {e} ({INSTALL_HINT})"}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    job_file, result_file = Path(argv[0]), Path(argv[1])
    job = json.loads(job_file.read_text("utf-8"))
    job["spawn_time"] = float(argv[2]) if len(argv) > 2 else time.time()
    try:
        result = run(job)
    except Exception as e:  # any failure becomes a row, never a crashed benchmark
        result = {
            "status": "failed",
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc()[-3000:],
        }
    result_file.write_text(json.dumps(result, indent=1, ensure_ascii=False), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
