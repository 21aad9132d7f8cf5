"""OpenVINO's other int8 routes on real weights, against the fp32 graph in bf16 (``auto`` on AMX):
NNCF weight compression (int8 weights decompressed on the fly, with bf16 or with f32 float parts
and dynamic activation quantization), and NNCF static int8 with SmoothQuant at several alphas,
with and without the export's outlier split. Optionally a ``PERF_COUNT`` profile of one text.

    python -m benchmarks.investigations.ov_int8_routes out/mpnet [--work DIR] [--alphas -1,0.5]
        [--routes bf16,dq,compress,static,static-split] [--groups 0,32,128] [--profile]

``out/mpnet`` is an exported folder (its manifest names the source model). The routes run on
OpenVINO's IR of the raw export with the pooling head: NNCF's graph builder rejects our fused graph
("Could not find a node Gather_… in NNCFGraph", also with unique friendly names). Each candidate:
held-out min / mean cos against transformers + torch fp32, the same text alone vs in its batch,
tokens/s on the mixed and query workloads through the runtime's batching (best of 3), and the
median one-text latency over 60 varied queries. JSON lines to stdout. Figures:
docs/performance.md, "AMX".
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BF16 = {"INFERENCE_PRECISION_HINT": "bf16"}


class Bench:
    """The texts, the torch reference and the measurements every candidate gets."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoTokenizer

        from benchmarks.investigations.int8_rows import held_out
        from benchmarks.workloads import workload
        from dmeta_embed.export.reference import torch_embeddings
        from dmeta_embed.export.source import resolve
        from dmeta_embed.texts import calibration_texts

        self.src = resolve(json.loads((folder / "manifest.json").read_text())["source"]["model"])
        self.hf = AutoTokenizer.from_pretrained(self.src.path, use_fast=True)
        self.pad = int(self.hf.pad_token_id or 0)
        self.dim = int(self.src.config["hidden_size"])
        texts = held_out(self.src.max_length)
        self.probe = self.tokenize(texts)
        self.ref = torch_embeddings(
            self.src.path, texts, self.src.pooling, self.src.normalize, self.src.max_length
        )
        self.mixed = self.tokenize(workload("mixed", 256))
        self.query = self.tokenize(workload("query", 128))
        self.one = self.tokenize(workload("query", 60, seed=7))
        self.calib = self.tokenize(calibration_texts())

    def tokenize(self, texts: list[str]):  # type: ignore[no-untyped-def]
        from dmeta_embed.runtime.tokenize import Tokenized

        ids = self.hf(texts, truncation=True, max_length=self.src.max_length, return_token_type_ids=False)[
            "input_ids"
        ]
        return Tokenized(ids=ids, lengths=np.array([len(i) for i in ids]), truncated=[])

    def measure(
        self, name: str, path: Path, properties: dict[str, str], speed: bool = True
    ) -> dict[str, Any]:
        from dmeta_embed.export.reference import cosines
        from dmeta_embed.runtime.openvino import OpenVINORunner
        from dmeta_embed.runtime.pipeline import embed_as_runtime
        from dmeta_embed.runtime.tokenize import Tokenized

        runner = OpenVINORunner(path, 2, properties, cache_dir=None)
        vectors = embed_as_runtime(runner, self.probe, self.pad, self.dim)
        cos = cosines(vectors, self.ref)
        alone = np.concatenate(
            [
                embed_as_runtime(
                    runner, Tokenized(ids=[i], lengths=np.array([len(i)]), truncated=[]), self.pad, self.dim
                )
                for i in self.probe.ids[:16]
            ]
        )
        out: dict[str, Any] = {
            "candidate": name,
            "min_cos": round(float(cos.min()), 5),
            "mean_cos": round(float(cos.mean()), 5),
            "alone_vs_batch_min_cos": round(float(np.min(np.sum(alone * vectors[:16], 1))), 6),
        }
        if speed:
            for label, tok in (("mixed", self.mixed), ("query", self.query)):
                embed_as_runtime(runner, tok, self.pad, self.dim)
                best = float("inf")
                for _ in range(3):
                    t = time.perf_counter()
                    embed_as_runtime(runner, tok, self.pad, self.dim)
                    best = min(best, time.perf_counter() - t)
                out[f"{label}_tokens_per_s"] = round(int(tok.lengths.sum()) / best)
            times = []
            for ids in self.one.ids:
                x = np.array([ids], np.int64)
                runner.run(x, np.ones_like(x))
                t = time.perf_counter()
                runner.run(x, np.ones_like(x))
                times.append(time.perf_counter() - t)
            out["one_text_p50_ms"] = round(statistics.median(times) * 1000, 2)
        print(json.dumps(out), flush=True)
        return out


def raw_with_head(bench: Bench, work: Path) -> Path:
    """The raw export (``graph.export_backbone``) with the pooling head, saved once in ``work``."""
    import onnx

    from dmeta_embed.export import graph

    head = work / "head.onnx"
    if not head.exists():
        raw = work / "raw.onnx"
        if not raw.exists():
            graph.export_backbone(bench.src.path, raw)
        onnx.save(
            graph.append_head(onnx.load(str(raw)), bench.src.pooling, bench.src.normalize, bench.dim),
            str(head),
        )
    return head


def compressed(head: Path, work: Path, mode: str) -> Path:
    """NNCF int8 weight compression (``INT8_ASYM`` / ``INT8_SYM``, per channel) as an IR."""
    import nncf
    import openvino as ov

    out = work / f"compressed-{mode}.xml"
    if not out.exists():
        model = nncf.compress_weights(
            ov.Core().read_model(str(head)), mode=getattr(nncf.CompressWeightsMode, mode)
        )
        ov.save_model(model, str(out), compress_to_fp16=False)
    return out


def static(bench: Bench, head: Path, work: Path, alpha: float, split: bool) -> Path:
    """NNCF static int8 (transformer preset) with SmoothQuant at ``alpha`` (-1: off), after the
    export's outlier split when ``split``."""
    import nncf
    import onnx
    import openvino as ov
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    from dmeta_embed.export import outlier_split

    source = work / f"static-in-{int(split)}.onnx"
    if not source.exists():
        model = onnx.load(str(head))
        if split:
            absmax = outlier_split.activation_absmax(model, bench.calib)
            model = outlier_split.split(model, outlier_split.outlier_channels(model, absmax))
        onnx.save(model, str(source))
    items = [
        {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
        for ids in bench.calib.ids
    ]
    quantized = nncf.quantize(
        ov.Core().read_model(str(source)),
        nncf.Dataset(items),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(items),
        advanced_parameters=AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha)
        ),
        ignored_scope=nncf.IgnoredScope(patterns=[outlier_split.IGNORED_PATTERN], validate=False)
        if split
        else None,
    )
    out = work / f"static-{alpha}-{int(split)}.xml"
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def profile(path: Path, length: int = 16) -> None:
    """Where one ``length``-token text's time goes in bf16, per node type, on 1 and 2 threads."""
    import openvino as ov

    for threads in (1, 2):
        config = {**BF16, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True}
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()
        ids = np.random.default_rng(0).integers(1000, 20000, (1, length)).astype(np.int64)
        feed = {compiled.inputs[0]: ids, compiled.inputs[1]: np.ones_like(ids)}
        times = []
        for i in range(35):
            t = time.perf_counter()
            request.infer(feed)
            if i >= 5:
                times.append(time.perf_counter() - t)
        per_type: dict[str, float] = collections.defaultdict(float)
        for p in request.profiling_info:
            if p.status.name == "EXECUTED":
                per_type[f"{p.node_type}:{p.exec_type}"] += p.real_time.total_seconds() * 1000
        total = sum(per_type.values())
        top = sorted(per_type.items(), key=lambda kv: -kv[1])[:6]
        print(
            json.dumps(
                {
                    "profile_threads": threads,
                    "p50_ms": round(statistics.median(times) * 1000, 2),
                    "top": {k: [round(v, 2), round(100 * v / total, 1)] for k, v in top},
                }
            ),
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="an exported folder (out/mpnet)")
    p.add_argument(
        "--work", type=Path, default=None, help="where the IRs go (default: out/inv/ov-int8/<name>)"
    )
    p.add_argument("--routes", default="bf16,compress,static,static-split")
    p.add_argument(
        "--groups",
        default="0,32,64,128,18446744073709551615",
        help="the dq route's DYNAMIC_QUANTIZATION_GROUP_SIZE values (0: off; 2**64-1: one group per token)",
    )
    p.add_argument(
        "--alphas", default="-1,0.5,0.95", help="SmoothQuant alphas for the static routes (-1: off)"
    )
    p.add_argument("--profile", action="store_true", help="PERF_COUNT of one 16-token text in bf16")
    a = p.parse_args(argv)
    work = a.work or Path("out/inv/ov-int8") / a.folder.name
    work.mkdir(parents=True, exist_ok=True)
    routes = set(a.routes.split(","))
    bench = Bench(a.folder)
    if a.profile:
        profile(a.folder / "model.onnx")
    if "bf16" in routes:
        bench.measure("fp32 graph in bf16 (auto)", a.folder / "model.onnx", BF16)
    if "dq" in routes:
        # the exported int8-ov file (int8 weights, float activations) with f32 float parts, where
        # OpenVINO quantizes each token's activations on the fly for its int8-weight layers
        path = a.folder / "model.int8-ov.onnx"
        core = __import__("openvino").Core()
        default = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        print(
            json.dumps({"default_group_size": str(default.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE"))})
        )
        del default
        bench.measure("int8-ov file + bf16 (as exported)", path, BF16)
        for group in a.groups.split(","):
            props = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": group}
            bench.measure(f"int8-ov file + f32 + dynamic quantization {group}", path, props)
    if not routes & {"compress", "static", "static-split"}:
        return 0
    head = raw_with_head(bench, work)
    if "compress" in routes:
        for mode in ("INT8_ASYM", "INT8_SYM"):
            path = compressed(head, work, mode)
            bench.measure(f"compress_weights {mode} + bf16", path, BF16)
            dq = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "32"}
            bench.measure(f"compress_weights {mode} + f32 + dynamic quantization 32", path, dq)
    for split in (False, True):
        if ("static-split" if split else "static") not in routes:
            continue
        for i, alpha in enumerate(float(x) for x in a.alphas.split(",")):
            path = static(bench, head, work, alpha, split)
            bench.measure(
                f"static int8, SmoothQuant {alpha}, outlier split {split}", path, BF16, speed=i == 0
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
