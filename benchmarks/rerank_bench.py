"""Reranking speed beside fidelity: our exported cross-encoders (``Reranker``, each CPU variant and
the one ``auto`` picks) against sentence-transformers' ``CrossEncoder`` (torch fp32, and its
``backend="onnx"`` and ``backend="openvino"``), on the real-body, seeded-head folders that
``benchmarks.cross_encoders`` builds ("real body, seeded head": speed is real, scores mean the
body's bi-encoder relevance, not a trained reranker's).

Two figures per system: pairs/s over mixed pairs (queries against documents of mixed lengths, one
``predict`` call per pass, batch 32) and the p50 latency of one query against 20 documents (one
``predict`` call each). Beside them, fidelity against CrossEncoder torch fp32 on the same pairs:
the largest |difference| of the sigmoid scores and the lowest per-query Spearman. A system counts
against ours only at our ``auto`` variant's bar (``manifest.SCORE_BARS``); a faster one that misses
it is shown and marked. Each system runs in its own process, one after another (run under the
shared lock):

    flock /tmp/dmeta-cpu.lock python -m benchmarks.rerank_bench minilm mpnet
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .cross_encoders import LABEL, MARKER
from .machine import load_snapshot, machine_info
from .timing import percentiles
from .workloads import workload_text

ROOT = Path(__file__).resolve().parent
MODELS = ROOT / "models" / "cross-encoders"
#: our variants timed on the CPU (fp16 is a CUDA variant)
OURS = ("fp32", "int8", "int8-ov", "bf16")
PEERS = ("st-torch", "st-onnx", "st-openvino")
DOCS_PER_QUERY = 20
BATCH = 32


def pairs_for(n_queries: int, seed: int) -> tuple[list[tuple[str, str]], list[int]]:
    """``n_queries`` seeded queries (8–30 characters), each against ``DOCS_PER_QUERY`` documents of
    mixed lengths: half short (20–80 characters), 40 % passages (100–300), 10 % long (600–1000,
    cut to max length): a retriever's candidates, as a reranker gets them. Returns the pairs and
    each pair's query index."""
    rng = random.Random(f"rerank:{seed}")
    pairs, queries = [], []
    for q in range(n_queries):
        query = workload_text(rng, rng.randint(8, 30))
        for _ in range(DOCS_PER_QUERY):
            r = rng.random()
            lo, hi = (20, 80) if r < 0.5 else (100, 300) if r < 0.9 else (600, 1000)
            pairs.append((query, workload_text(rng, rng.randint(lo, hi))))
            queries.append(q)
    return pairs, queries


def _load(system: str, model: str, cache: Path) -> tuple[Any, dict[str, Any]]:
    """A ``predict(pairs) -> scores`` callable for ``system`` and what it runs."""
    import torch

    torch.set_num_threads(_threads())
    folder = MODELS / f"{model}-export"
    if system in OURS or system == "auto":
        from dmeta_embed import Reranker

        rr = Reranker.load(folder, variant="auto" if system == "auto" else system)
        return (lambda p: rr.predict(p, batch_size=BATCH)), {
            "variant": rr.variant.value,
            "provider": rr.provider.value,
        }
    from sentence_transformers import CrossEncoder
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    src = MODELS / model
    backend = system.removeprefix("st-")
    if backend == "torch":
        ce = CrossEncoder(str(src), device="cpu")
    else:
        where = cache / f"{model}-{backend}"
        marker = (src / MARKER).read_text("utf-8")
        if not where.is_dir() or (where / MARKER).read_text("utf-8") != marker:
            # sentence-transformers' own export of this head (a rebuilt head: exported anew)
            shutil.rmtree(where, ignore_errors=True)
            CrossEncoder(str(src), device="cpu", backend=backend).save_pretrained(str(where))
            (where / MARKER).write_text(marker, "utf-8")
        ce = CrossEncoder(str(where), device="cpu", backend=backend)
    return (lambda p: np.asarray(ce.predict(p, batch_size=BATCH, show_progress_bar=False))), {
        "backend": backend,
        "max_length": ce.max_seq_length,
    }


def _threads() -> int:
    from dmeta_embed.runtime.cpu import available_cpus

    return available_cpus()


def one(system: str, model: str, n_queries: int, repeats: int, calls: int, cache: Path) -> dict[str, Any]:
    """Time ``system`` on ``model`` in this process: bulk passes, then single-query latency."""
    t = time.perf_counter()
    predict, info = _load(system, model, cache)
    load_s = time.perf_counter() - t
    pairs, _ = pairs_for(n_queries, seed=0)
    scores = np.empty(0)
    bulk = []
    for i in range(repeats + 1):  # the first pass warms up
        t = time.perf_counter()
        scores = np.asarray(predict(pairs), dtype=np.float64).reshape(len(pairs))
        if i:
            bulk.append(time.perf_counter() - t)
    lat_pairs, _ = pairs_for(calls, seed=1)
    predict(lat_pairs[:DOCS_PER_QUERY])
    lat = []
    for c in range(calls):
        group = lat_pairs[c * DOCS_PER_QUERY : (c + 1) * DOCS_PER_QUERY]
        t = time.perf_counter()
        predict(group)
        lat.append((time.perf_counter() - t) * 1e3)
    return info | {
        "load_s": round(load_s, 2),
        "bulk_s": [round(x, 4) for x in bulk],
        "pairs_per_s": round(len(pairs) / float(np.median(bulk)), 1),
        "latency_ms": {k: round(v, 2) if isinstance(v, float) else v for k, v in percentiles(lat).items()},
        "scores": [float(x) for x in scores],
    }


def _fidelity(scores: list[float], reference: list[float], queries: list[int]) -> dict[str, float]:
    from dmeta_embed.export.score_fidelity import spearman

    s, r, q = np.asarray(scores), np.asarray(reference), np.asarray(queries)
    return {
        "max_abs_diff": float(np.abs(s - r).max()),
        "min_spearman": min(spearman(s[q == i], r[q == i]) for i in np.unique(q)),
    }


def run(model: str, systems: list[str], n_queries: int, repeats: int, calls: int) -> dict[str, Any]:
    """Each system in its own process, then fidelity vs CrossEncoder torch fp32 and the bar."""
    from dmeta_embed.manifest import SCORE_BARS, Precision

    cache = MODELS / "peers"
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for system in systems:
        cmd = [sys.executable, "-m", "benchmarks.rerank_bench", model, "--one", system]
        cmd += ["--queries", str(n_queries), "--repeats", str(repeats), "--calls", str(calls)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            out[system] = {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
        else:
            out[system] = json.loads(done.stdout.strip().splitlines()[-1])
        print(system, {k: v for k, v in out[system].items() if k != "scores"}, file=sys.stderr)
    _, queries = pairs_for(n_queries, seed=0)
    for needed in ("st-torch", "auto"):
        if "scores" not in out.get(needed, {}):
            raise SystemExit(f"{needed} did not run: {out.get(needed, {}).get('error', 'not asked for')}")
    reference = out["st-torch"]["scores"]
    auto = out["auto"]["variant"]
    bar = SCORE_BARS[Precision(auto)]
    ours = out["auto"]["pairs_per_s"]
    for r in out.values():
        if "scores" not in r:
            continue
        f = _fidelity(r.pop("scores"), reference, queries)
        r["fidelity"] = f
        r["meets_auto_bar"] = f["max_abs_diff"] <= bar.max_abs_diff and f["min_spearman"] >= bar.min_spearman
        r["vs_auto"] = round(r["pairs_per_s"] / ours, 3)
    tokens = _tokens(model, n_queries)
    return {
        "label": LABEL,
        "model": model,
        "workload": {
            "pairs": len(queries),
            "queries": n_queries,
            "documents_per_query": DOCS_PER_QUERY,
            "tokens": tokens,
            "batch_size": BATCH,
            "latency": f"one query x {DOCS_PER_QUERY} documents, {calls} calls",
        },
        "auto": auto,
        "auto_bar": {"max_abs_diff": bar.max_abs_diff, "min_spearman": bar.min_spearman},
        "systems": out,
    }


def _tokens(model: str, n_queries: int) -> dict[str, float]:
    """Token counts of the pairs as fed (after pair truncation)."""
    from dmeta_embed.manifest import Manifest
    from dmeta_embed.runtime.tokenize import PairTokenizer

    folder = MODELS / f"{model}-export"
    m = Manifest.load(folder)
    assert m.rerank is not None
    tok = PairTokenizer(
        folder / m.tokenizer.file, m.max_length, m.rerank.truncation, "token_type_ids" in m.inputs
    )
    lengths = tok.encode_pairs(pairs_for(n_queries, seed=0)[0]).lengths
    return {"total": int(lengths.sum()), "mean": round(float(lengths.mean()), 1), "max": int(lengths.max())}


def markdown(result: dict[str, Any]) -> list[str]:
    """The table docs/performance.md shows (one model)."""
    w, bar = result["workload"], result["auto_bar"]
    lines = [
        f"**{result['model']}** ({result['label']}; {w['pairs']} pairs, {w['tokens']['total']:,} tokens, "
        f"auto = {result['auto']}, its bar: max |Δscore| ≤ {bar['max_abs_diff']}, "
        f"min Spearman ≥ {bar['min_spearman']})",
        "",
        "| system | pairs/s | vs auto | p50 ms, 1 query × 20 docs | max \\|Δscore\\| | min Spearman | at auto's bar |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in result["systems"].items():
        if "error" in r:
            why = (
                "left out at export"
                if "not in this folder" in r["error"]
                else f"did not run: {r['error'][:80]}"
            )
            lines.append(f"| ours {name} | – | – | – | – | – | {why} |")
            continue
        label = name if name != "auto" else f"auto ({r['variant']})"
        if "backend" in r:
            label = f"CrossEncoder {r['backend']}" + (" (reference)" if r["backend"] == "torch" else "")
        else:
            label = f"ours {label}"
        f = r["fidelity"]
        mark = "yes" if r["meets_auto_bar"] else "**no**"
        lines.append(
            f"| {label} | {r['pairs_per_s']:.1f} | {r['vs_auto']:.2f}x | {r['latency_ms']['p50']:.1f} | "
            f"{f['max_abs_diff']:.2e} | {f['min_spearman']:.4f} | {mark} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--systems", default=",".join(("auto", *OURS, *PEERS)))
    ap.add_argument("--queries", type=int, default=8, help="queries of the bulk passes (x 20 documents)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calls", type=int, default=15, help="single-query latency calls")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        r = one(args.one, args.models[0], args.queries, args.repeats, args.calls, MODELS / "peers")
        print(json.dumps(r))
        return
    from dmeta_embed.runtime.cpu import detect

    cpu = detect()
    dest = ROOT / "results" / "cross-encoders" / cpu.cpu_class.value
    for model in args.models:
        before = load_snapshot()
        result = run(model, args.systems.split(","), args.queries, args.repeats, args.calls)
        result |= {
            "cpu_class": cpu.cpu_class.value,
            "machine": machine_info(),
            "load_before": before,
            "load_after": load_snapshot(),
        }
        (dest / f"bench-{model}.json").write_text(json.dumps(result, indent=2) + "\n", "utf-8")
        print("\n".join(markdown(result)))


if __name__ == "__main__":
    main()
