"""The speed half of the GPU check: one system (ours or the torch fp16 peer) in its own process.

    python -m benchmarks.gpu_check_bench --system ours  --model EXPORT --json ours.json --emb ours.npy
    python -m benchmarks.gpu_check_bench --system torch --src SOURCE   --json torch.json --emb torch.npy

Each system runs in a fresh process so that its peak GPU memory (sampled device-wide while it
runs, above what the device held once this process's CUDA context existed) is its own: the
parent's export sessions and the other system's allocator caches are not in it. Both systems get
the same seeded texts (``texts()``), are timed end to end (tokenising included), and save their
embeddings of the first ``PARITY_TEXTS`` mixed texts so the parent can check them against fp32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .peers import length_sorted_batches
from .workloads import workload

#: mixed texts whose embeddings each system saves for the parent's parity check
PARITY_TEXTS = 256
#: the peer's batch size: sentence-transformers' default, and our runtime's batch_size cap
BATCH_SIZE = 32


def exact_text(n_tokens: int, seed: int = 0) -> str:
    """Chinese text that a BERT-zh WordPiece tokenizer reads as exactly ``n_tokens`` tokens, [CLS]
    and [SEP] included: ideographs of the CJK block, each its own token (``tokenize_chinese_chars``)."""
    if n_tokens < 3:
        raise ValueError(f"n_tokens must be at least 3 ([CLS], one character, [SEP]), got {n_tokens}")
    import random

    rng = random.Random(f"exact:{n_tokens}:{seed}")
    return "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(n_tokens - 2))


def texts(n_mixed: int, n_queries: int) -> dict[str, list[str]]:
    """The bulk workloads (benchmarks.workloads: 70 % queries, 25 % passages, 5 % long; queries
    8–30 characters) and the one 16-token query of the latency run."""
    return {
        "mixed": workload("mixed", n_mixed, seed=12),
        "query": workload("query", n_queries, seed=13),
        "latency": [exact_text(16, seed=1)],
    }


class GpuMemory:
    """Device-wide GPU memory in use, sampled every few milliseconds on a thread between
    ``start()`` and ``stop()``. NVML (nvidia-ml-py) when importable, else ``torch.cuda.mem_get_info``."""

    def __init__(self, index: int = 0, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.source = "nvml"
            self._used: Callable[[], int] = lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        except Exception:  # no nvidia-ml-py, or NVML refused inside this VM
            import torch

            self.source = "torch.cuda.mem_get_info"

            def used() -> int:
                free, total = torch.cuda.mem_get_info(index)
                return int(total - free)

            self._used = used
        self.baseline = self._used()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._used())
            time.sleep(self.interval_s)

    def start(self) -> None:
        self._peak = self._used()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._peak = max(self._peak, self._used())
        mib = 1024 * 1024
        return {
            "source": self.source,
            "baseline_mib": round(self.baseline / mib),
            "peak_mib": round(self._peak / mib),
            "peak_above_baseline_mib": round((self._peak - self.baseline) / mib),
        }


def time_bulk(encode: Callable[[list[str]], np.ndarray], items: list[str], tokens: int, passes: int) -> dict:
    """Median wall time of ``passes`` full encodes after one warm-up on a slice; tokens/s, texts/s."""
    encode(items[: min(len(items), 256)])
    runs = []
    for _ in range(passes):
        t = time.perf_counter()
        encode(items)
        runs.append(time.perf_counter() - t)
    median = statistics.median(runs)
    return {
        "texts": len(items),
        "tokens": tokens,
        "passes_s": [round(r, 3) for r in runs],
        "tokens_per_s": round(tokens / median),
        "texts_per_s": round(len(items) / median),
    }


def time_latency(encode: Callable[[list[str]], np.ndarray], text: str, runs: int, warmup: int = 20) -> dict:
    """One text per call, ``runs`` calls after ``warmup``: percentiles in milliseconds."""
    for _ in range(warmup):
        encode([text])
    lat = []
    for _ in range(runs):
        t = time.perf_counter()
        encode([text])
        lat.append((time.perf_counter() - t) * 1000)
    return {
        "runs": runs,
        "p50": round(float(np.percentile(lat, 50)), 3),
        "p90": round(float(np.percentile(lat, 90)), 3),
        "p99": round(float(np.percentile(lat, 99)), 3),
        "mean": round(float(np.mean(lat)), 3),
    }


class Ours:
    """Our runtime on the fp16 file: onnxruntime's CUDA provider with IO binding (runtime.session)."""

    def __init__(self, model: Path, device: str, variant: str) -> None:
        from dmeta_embed.runtime import Embedder

        self.embedder = Embedder.load(model, variant=variant, provider=device)
        # the onnxruntime session, where this runtime version keeps one (not a public attribute)
        session = getattr(self.embedder.pipeline.runner, "session", None)
        self.info = {
            "variant": self.embedder.variant.value,
            "provider": self.embedder.provider.value,
            "session_providers": session.get_providers() if session is not None else None,
            "batching": f"token budget {self.embedder.max_batch_tokens}, batch ≤ {self.embedder.batch_size}",
        }

    def encode(self, items: list[str]) -> np.ndarray:
        return self.embedder.encode(items)

    def count_tokens(self, items: list[str]) -> int:
        return sum(self.embedder.count_tokens(items))


class TorchPeer:
    """transformers' AutoModel in fp16 on the GPU (its default attention, sdpa), length-sorted
    batches of 32, CLS pooling and L2 normalisation on the device: what a user writes by hand."""

    def __init__(self, src: Path, device: str, fp16: bool, max_length: int) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.torch, self.device, self.max_length = torch, device, max_length
        self.tok = AutoTokenizer.from_pretrained(src, use_fast=True)
        model = AutoModel.from_pretrained(src).eval()
        self.model = model.to(device=device, dtype=torch.float16 if fp16 else torch.float32)
        self.info = {
            "dtype": str(next(self.model.parameters()).dtype),
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "batching": f"length-sorted batches of {BATCH_SIZE}",
        }

    def encode(self, items: list[str]) -> np.ndarray:
        torch = self.torch
        out = np.empty((len(items), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for idx in length_sorted_batches(items, BATCH_SIZE):
                enc = self.tok(
                    [items[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                enc = {k: v.to(self.device, non_blocking=True) for k, v in enc.items()}
                v = self.model(**enc).last_hidden_state[:, 0]
                v = torch.nn.functional.normalize(v.float(), dim=-1)
                out[idx] = v.cpu().numpy()
        return out

    def count_tokens(self, items: list[str]) -> int:
        enc = self.tok(items, truncation=True, max_length=self.max_length)
        return sum(len(ids) for ids in enc["input_ids"])


def run(a: argparse.Namespace) -> dict[str, Any]:
    import torch  # first: its CUDA libraries are the ones onnxruntime's CUDA provider then finds

    cuda = a.device == "cuda"
    memory = None
    if cuda:
        torch.cuda.mem_get_info()  # creates this process's CUDA context before the baseline
        memory = GpuMemory()
    t = time.perf_counter()
    if a.system == "ours":
        system: Ours | TorchPeer = Ours(Path(a.model), a.device, a.variant)
    else:
        system = TorchPeer(Path(a.src), a.device, fp16=a.variant == "fp16", max_length=a.max_length)
    load_s = time.perf_counter() - t
    work = texts(a.n_mixed, a.n_queries)
    if memory is not None:
        memory.start()
    result: dict[str, Any] = {"system": a.system, "device": a.device, "load_s": round(load_s, 2)}
    result["info"] = system.info
    np.save(a.emb, system.encode(work["mixed"][:PARITY_TEXTS]))
    for name in ("mixed", "query"):
        tokens = system.count_tokens(work[name])
        result[name] = time_bulk(system.encode, work[name], tokens, a.passes)
    result["latency_ms"] = time_latency(system.encode, work["latency"][0], a.latency_runs)
    result["latency_ms"]["tokens"] = system.count_tokens(work["latency"])
    if memory is not None:
        result["gpu_memory"] = memory.stop()
        result["gpu_memory"]["torch_max_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="one system's speed run for benchmarks.gpu_check")
    ap.add_argument("--system", choices=["ours", "torch"], required=True)
    ap.add_argument("--model", help="exported folder (ours)")
    ap.add_argument("--src", help="source model folder (torch)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--variant", choices=["fp16", "fp32"], default="fp16")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--n-mixed", type=int, default=4096)
    ap.add_argument("--n-queries", type=int, default=4096)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--latency-runs", type=int, default=300)
    ap.add_argument("--json", required=True, help="where this run's result goes")
    ap.add_argument("--emb", required=True, help="embeddings of the first mixed texts (.npy)")
    a = ap.parse_args(argv)
    if a.system == "ours" and not a.model:
        ap.error("--system ours needs --model")
    if a.system == "torch" and not a.src:
        ap.error("--system torch needs --src")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    result = run(a)
    Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
