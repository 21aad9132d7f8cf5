"""How many of int8-ov's static activation quantizers can stay on real weights, ranked per
quantizer by a measured damage estimate instead of by role, and what each count is worth in speed.

    python -m benchmarks.investigations.int8_ov_static MODEL_DIR [--trust-remote-code] [--ks 0,8,16,...]

Builds the raw export with the pooling head (what the int8-ov builder quantizes), runs the export's
own ``openvino.quantize_static`` (outlier split, NNCF static int8), then estimates each activation
quantizer's damage on the calibration texts: the fp32 activation it quantizes (weights-only
graph, onnxruntime, one text at a time) against its static int8 round trip, as each token row's
relative error; the score is the worst text's mean row error. The ``k`` worst quantizers are
removed (their MatMuls keep int8 weights and read float activations) and each candidate runs
through OpenVINO with bf16 float parts: held-out min / mean cos against transformers + torch fp32,
the same text alone vs inside the sorted batches, and tokens/s over the mixed workload (the
candidates take turns; a shared machine makes timings noisy). JSON to stdout (and ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def quantizer_params(model, name: str) -> tuple[str, float, int, np.dtype]:  # type: ignore[no-untyped-def]
    """(input tensor, scale, zero point, zero point's dtype) of the QuantizeLinear ``name``."""
    from onnx import numpy_helper

    init = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant"}
    node = next(n for n in model.graph.node if n.name == name)

    def value(t: str) -> np.ndarray:
        return numpy_helper.to_array(init[t] if t in init else consts[t])

    zp = value(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
    return node.input[0], float(value(node.input[1]).reshape(-1)[0]), int(zp.reshape(-1)[0]), zp.dtype


def damage(static, quantizers, calib) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Each quantizer's worst-text mean relative row error of its static int8 round trip."""
    import onnx
    import onnxruntime as ort

    from dmeta_embed.export import openvino

    params = {q.name: quantizer_params(static, q.name) for q in quantizers}
    m = openvino.unquantize(static, {q.name for q in quantizers})
    taps = sorted({p[0] for p in params.values()})
    for t in taps:
        m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    worst = {q: 0.0 for q in params}
    for ids in calib.ids:
        x = np.asarray([ids], np.int64)
        out = dict(
            zip(names, sess.run(None, {"input_ids": x, "attention_mask": np.ones_like(x)}), strict=True)
        )
        for q, (t, scale, zp, dtype) in params.items():
            a = out[t].reshape(-1, out[t].shape[-1])
            lo, hi = (0, 255) if dtype == np.uint8 else (-128, 127)
            dq = (np.clip(np.round(a / scale) + zp, lo, hi) - zp) * scale
            err = np.linalg.norm(a - dq, axis=1) / np.maximum(np.linalg.norm(a, axis=1), 1e-12)
            worst[q] = max(worst[q], float(err.mean()))
    return worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--work", type=Path, default=None, help="cache folder for the raw export")
    p.add_argument("--ks", default="0,8,16,24,32,48,64,all", help="quantizers removed, worst first")
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)

    import onnx
    from transformers import AutoTokenizer

    from benchmarks.investigations.int8_rows import held_out
    from benchmarks.workloads import workload
    from dmeta_embed.export import graph, int8_ov_search, openvino, openvino_runner
    from dmeta_embed.export.reference import cosines, torch_embeddings
    from dmeta_embed.export.source import resolve
    from dmeta_embed.runtime.cpu import detect
    from dmeta_embed.runtime.pipeline import embed_as_runtime
    from dmeta_embed.runtime.tokenize import Tokenized
    from dmeta_embed.texts import calibration_texts

    src = resolve(str(a.model), trust_remote_code=a.trust_remote_code)
    hidden = int(src.config["hidden_size"])
    work = a.work or Path(tempfile.mkdtemp(prefix="int8-ov-static-"))
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "raw.onnx"
    if not raw.exists():
        graph.export_backbone(src.path, raw, trust_remote_code=a.trust_remote_code)
    head = graph.append_head(onnx.load(str(raw)), src.pooling, src.normalize, hidden)
    hf = AutoTokenizer.from_pretrained(src.path, use_fast=True, trust_remote_code=a.trust_remote_code)
    pad = int(hf.pad_token_id or 0)

    def tokenize(texts: list[str]) -> Tokenized:
        ids = hf(texts, truncation=True, max_length=src.max_length, return_token_type_ids=False)["input_ids"]
        return Tokenized(ids=ids, lengths=np.array([len(i) for i in ids]), truncated=[])

    calib = tokenize(calibration_texts())
    texts = held_out(src.max_length)
    probe = tokenize(texts)
    ref = torch_embeddings(
        src.path, texts, src.pooling, src.normalize, src.max_length, trust_remote_code=a.trust_remote_code
    )
    t0 = time.time()
    static = openvino.quantize_static(head, calib)
    quantize_s = time.time() - t0
    quantizers = openvino.activation_quantizers(static)
    t0 = time.time()
    score = damage(static, quantizers, calib)
    damage_s = time.time() - t0
    order = sorted(score, key=score.get, reverse=True)  # type: ignore[arg-type]
    role = {q.name: q.role for q in quantizers}
    ks = [len(order) if k == "all" else int(k) for k in a.ks.split(",")]
    embed = openvino_runner.openvino_embedder(work, openvino.BF16, pad)
    mixed = tokenize(workload("mixed", 256))
    n_tokens = int(mixed.lengths.sum())
    result: dict[str, object] = {
        "model": src.model_id,
        "cpu": detect().describe(),
        "weights": "real",
        "quantizers": len(order),
        "quantize_s": round(quantize_s, 1),
        "damage_s": round(damage_s, 1),
        "ranking": [(q, role[q], round(score[q], 4)) for q in order],
        "candidates": {},
    }
    runners = {}

    def run(runner, tok: Tokenized) -> np.ndarray:  # type: ignore[no-untyped-def]
        return embed_as_runtime(runner, tok, pad_id=pad, dim=hidden)

    fp32_runner = openvino_runner.compile_runner(work, head, openvino.BF16)
    runners["bf16 (no int8)"] = fp32_runner
    result["candidates"]["bf16 (no int8)"] = {"min_cos": float(cosines(run(fp32_runner, probe), ref).min())}
    for k in ks:
        cand = int8_ov_search._final(static, {q: "ranked" for q in order[:k]}) if k else static
        (work / f"k{k}").mkdir(exist_ok=True)
        runner = openvino_runner.compile_runner(work / f"k{k}", cand, openvino.BF16)
        v = run(runner, probe)
        c = cosines(v, ref)
        alone = np.stack(
            [
                run(runner, Tokenized([probe.ids[i]], probe.lengths[i : i + 1], []))[0]
                for i in range(0, len(texts), 4)
            ]
        )
        inv = float(cosines(alone, v[::4]).min())
        cal = cosines(embed(cand, calib), embed(head, calib))
        result["candidates"][f"{len(order) - k}/{len(order)} static"] = {
            "removed": k,
            "min_cos": round(float(c.min()), 5),
            "mean_cos": round(float(c.mean()), 5),
            "calibration_min_cos": round(float(cal.min()), 5),
            "calibration_mean_cos": round(float(cal.mean()), 5),
            "alone_vs_batch_min_cos": round(inv, 6),
        }
        runners[f"{len(order) - k}/{len(order)} static"] = runner
        print(k, result["candidates"][f"{len(order) - k}/{len(order)} static"], file=sys.stderr, flush=True)
    speeds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(a.passes):
        for name, runner in runners.items():
            run(runner, mixed)
            t = time.perf_counter()
            run(runner, mixed)
            speeds[name].append(n_tokens / (time.perf_counter() - t))
    for name, s in speeds.items():
        result["candidates"][name]["tokens_per_s"] = round(max(s))  # type: ignore[index]
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
