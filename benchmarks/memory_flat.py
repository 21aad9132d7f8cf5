"""Does RSS stay flat when every batch has a new shape? Compare ONNX Runtime session options.

Runs N random-shape batches (random batch size and sequence length) through one exported
variant under several option sets, each in a fresh subprocess, and records RSS over time.
Usage: python benchmarks/memory_flat.py out/minilm --variant int8 --batches 2000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    # ORT defaults: memory pattern on (plans a buffer per input shape), arena on
    "ort-defaults": {"mem_pattern": True, "arena": True},
    # what dmeta-embed ships (session.session_options)
    "dmeta-embed": {"mem_pattern": False, "arena": True},
    "no-pattern-no-arena": {"mem_pattern": False, "arena": False},
}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(folder: str, variant: str, batches: int, mem_pattern: bool, arena: bool) -> dict:
    import numpy as np
    import onnxruntime as ort

    from dmeta_embed.manifest import Manifest
    from dmeta_embed.runtime.session import session_options

    m = Manifest.load(folder)
    so = session_options(None)
    so.enable_mem_pattern = mem_pattern
    so.enable_cpu_mem_arena = arena
    sess = ort.InferenceSession(
        str(Path(folder) / m.variants[variant].file), so, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    vocab = 1000
    samples, t0 = [], time.perf_counter()
    for i in range(batches):
        b = int(rng.integers(1, 9))
        s = int(rng.integers(4, m.max_length + 1))
        ids = rng.integers(100, 100 + vocab, size=(b, s)).astype(np.int64)
        mask = np.ones((b, s), dtype=np.int64)
        mask[:, s // 2 + 1 :] = rng.integers(0, 2, size=(b, s - s // 2 - 1)).cumprod(axis=1)
        sess.run(None, {"input_ids": ids, "attention_mask": mask})
        if i in (9, 49, 199) or (i + 1) % 250 == 0:
            samples.append((i + 1, round(rss_mb(), 1)))
    return {"samples": samples, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--variant", default="int8")
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--child", default=None)
    a = ap.parse_args()
    if a.batches < 250:
        ap.error("--batches must be at least 250: growth is measured from batch 200 to the last sample")
    if a.child:
        print(json.dumps(child(a.folder, a.variant, a.batches, **CONFIGS[a.child])))
        return
    results = {}
    for name in CONFIGS:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                a.folder,
                "--variant",
                a.variant,
                "--batches",
                str(a.batches),
                "--child",
                name,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        warm = dict(r["samples"])[200]
        last = r["samples"][-1][1]
        r["growth_after_warmup_pct"] = round(100 * (last - warm) / warm, 1)
        results[name] = r
        print(name, r, flush=True)
    from dmeta_embed.runtime.cpu import detect

    model = Path(a.folder).name  # results are kept per model and CPU class
    dest = (
        Path(__file__).parent
        / "results"
        / model
        / detect().cpu_class.value
        / f"memory_{model}_{a.variant}.json"
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(
        json.dumps(
            {
                "folder": a.folder,
                "variant": a.variant,
                "batches": a.batches,
                "date": time.strftime("%Y-%m-%d"),
                "cpus": os.cpu_count(),
                "configs": CONFIGS,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print("wrote", dest)


if __name__ == "__main__":
    main()
