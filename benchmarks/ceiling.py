"""Where the CPU time goes, and how fast this engine could go on this machine.

Three measurements, all with onnxruntime on the machine's CPU threads:

1. kernel rates at the model's shapes: int8 GEMM (u8×s8, AMX where present), fp32 GEMM,
   fp32 attention math (MultiHeadAttention, scores + softmax + context), streaming every
   int8 weight once (what a single short query must do), element-wise ops;
2. a per-op profile of the exported variant on a workload, batched exactly as the runtime
   batches it, with the achieved rate of each op class next to its kernel rate;
3. a lower bound on time for that workload: its int8 GEMM work at the GEMM kernel rate plus
   its attention math at the attention kernel rate, everything else free. The tokens/s it
   gives is a ceiling for these kernels, not a target.

    python -m benchmarks.ceiling --model out/dmeta-shaped [--variant int8] [--output DIR]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _session(model: Any, threads: int, *, profile: str | None = None, save_optimized: str | None = None):  # type: ignore[no-untyped-def]
    """A CPU session with the runtime's options (``session_options``, SkipLayerNormFusion off: a
    kernel microbench may test that op itself); ``profile``: a profile file prefix,
    ``save_optimized``: where to write the graph as onnxruntime runs it."""
    import onnxruntime as ort

    from dmeta_embed.runtime.session import CPU, CPU_DISABLED_OPTIMIZERS, session_options

    so = session_options(threads)
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    if save_optimized:
        so.optimized_model_filepath = save_optimized
    data = model if isinstance(model, (str, bytes)) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=[CPU], disabled_optimizers=CPU_DISABLED_OPTIMIZERS)


def _time(sess, feeds: dict[str, np.ndarray], budget_s: float = 0.6) -> float:  # type: ignore[no-untyped-def]
    """Median seconds per run after warm-up, about ``budget_s`` of runs."""
    for _ in range(3):
        sess.run(None, feeds)
    t = time.perf_counter()
    sess.run(None, feeds)
    once = time.perf_counter() - t
    runs = []
    for _ in range(max(5, min(200, int(budget_s / max(once, 1e-6))))):
        t = time.perf_counter()
        sess.run(None, feeds)
        runs.append(time.perf_counter() - t)
    return float(np.median(runs))


def _graph(nodes, inputs, inits):  # type: ignore[no-untyped-def]
    from onnx import TensorProto, helper

    g = helper.make_graph(
        nodes, "k", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits
    )
    return helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )


def _int8_matmul(rng: np.random.Generator, k: int, n: int):  # type: ignore[no-untyped-def]
    """``x [M, k]`` times random int8 weights ``[k, n]``, ``x`` quantized on the fly (as our int8 files)."""
    from onnx import TensorProto, helper
    from onnx import numpy_helper as nh

    w = rng.integers(-127, 127, size=(k, n)).astype(np.int8)
    return _graph(
        [helper.make_node("DynamicQuantizeMatMul", ["x", "w", "s", "z"], ["y"], domain="com.microsoft")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", k])],
        [
            nh.from_array(w, "w"),
            nh.from_array(np.full(n, 0.01, np.float32), "s"),
            nh.from_array(np.zeros(n, np.int8), "z"),
        ],
    )


def kernel_rates(threads: int, hidden: int, heads: int, ffn: int, weight_elems: int) -> dict[str, Any]:
    """Measured rates of the kernels the int8 variant is made of, at its shapes."""
    from onnx import TensorProto as T
    from onnx import helper
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    vi = helper.make_tensor_value_info
    out: dict[str, Any] = {"threads": threads}
    m_rows = 1024

    dq = _int8_matmul(rng, hidden, ffn)
    x = rng.normal(size=(m_rows, hidden)).astype(np.float32)
    dt = _time(_session(dq, threads), {"x": x})
    out["int8_gemm_tops"] = round(2 * m_rows * hidden * ffn / dt / 1e12, 3)

    mm = _graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [vi("x", T.FLOAT, ["M", hidden])],
        [nh.from_array(rng.normal(size=(hidden, ffn)).astype(np.float32), "w")],
    )
    dt = _time(_session(mm, threads), {"x": x})
    out["fp32_gemm_gflops"] = round(2 * m_rows * hidden * ffn / dt / 1e9, 1)

    # every int8 weight of the model streamed once with 16 rows: the floor of a 16-token query
    n = max(1, weight_elems // hidden)
    ws = _int8_matmul(rng, hidden, n)
    dt = _time(_session(ws, threads), {"x": rng.normal(size=(16, hidden)).astype(np.float32)})
    out["weight_stream_16_rows"] = {
        "ms": round(dt * 1e3, 3),
        "weight_mb": round(hidden * n / 1e6, 1),
        "gb_per_s": round(hidden * n / dt / 1e9, 1),
    }

    att = _graph(
        [
            helper.make_node(
                "MultiHeadAttention", ["q", "k", "v", "", "m"], ["y"], domain="com.microsoft", num_heads=heads
            )
        ],
        [vi(name, T.FLOAT, ["B", "S", hidden]) for name in "qkv"] + [vi("m", T.INT32, ["B", "S"])],
        [],
    )
    sess = _session(att, threads)
    out["attention_gflops"] = {}
    for seq in (16, 32, 64, 300, 1024):
        batch = max(1, 1024 // seq)
        q = rng.normal(size=(batch, seq, hidden)).astype(np.float32)
        dt = _time(sess, {"q": q, "k": q, "v": q, "m": np.ones((batch, seq), np.int32)})
        out["attention_gflops"][seq] = round(4 * batch * seq * seq * hidden / dt / 1e9, 1)

    elem: dict[str, float] = {}
    g, b = np.ones(hidden, np.float32), np.zeros(hidden, np.float32)
    xh = rng.normal(size=(m_rows, hidden)).astype(np.float32)
    xf = rng.normal(size=(m_rows, ffn)).astype(np.float32)
    for name, node, ins, inits, feeds, count in (
        (
            "LayerNormalization",
            helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-12),
            [vi("x", T.FLOAT, ["M", hidden])],
            [nh.from_array(g, "g"), nh.from_array(b, "b")],
            {"x": xh},
            xh.size,
        ),
        (
            "SkipLayerNormalization",
            helper.make_node(
                "SkipLayerNormalization", ["x", "s", "g", "b"], ["y"], domain="com.microsoft", epsilon=1e-12
            ),
            [vi("x", T.FLOAT, ["M", hidden]), vi("s", T.FLOAT, ["M", hidden])],
            [nh.from_array(g, "g"), nh.from_array(b, "b")],
            {"x": xh, "s": xh},
            xh.size,
        ),
        (
            "Add",
            helper.make_node("Add", ["x", "s"], ["y"]),
            [vi("x", T.FLOAT, ["M", hidden]), vi("s", T.FLOAT, ["M", hidden])],
            [],
            {"x": xh, "s": xh},
            xh.size,
        ),
        (
            "BiasGelu",
            helper.make_node("BiasGelu", ["x", "b"], ["y"], domain="com.microsoft"),
            [vi("x", T.FLOAT, ["M", ffn])],
            [nh.from_array(np.zeros(ffn, np.float32), "b")],
            {"x": xf},
            xf.size,
        ),
    ):
        dt = _time(_session(_graph([node], ins, inits), threads), feeds, 0.3)
        elem[name] = round(count / dt / 1e9, 2)
    out["elementwise_gelem_per_s"] = elem

    # fixed cost of one kernel call: a chain of tiny Adds, as many threads as the model uses
    chain = 100
    nodes = [
        helper.make_node("Add", ["x" if i == 0 else f"t{i}", "one"], ["y" if i == chain - 1 else f"t{i + 1}"])
        for i in range(chain)
    ]
    tiny = _graph(
        nodes, [vi("x", T.FLOAT, [1, 16, hidden])], [nh.from_array(np.ones(hidden, np.float32), "one")]
    )
    dt = _time(_session(tiny, threads), {"x": rng.normal(size=(1, 16, hidden)).astype(np.float32)})
    out["kernel_call_us"] = round(dt / chain * 1e6, 2)
    return out


def model_shape(path: Path) -> dict[str, int]:
    import onnx

    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    heads = next(
        (
            a.i
            for n in m.graph.node
            for a in n.attribute
            if n.op_type in ("Attention", "QAttention", "MultiHeadAttention") and a.name == "num_heads"
        ),
        12,
    )
    ops = collections.Counter(n.op_type for n in m.graph.node)
    layers = sum(ops[k] for k in ("Attention", "QAttention", "MultiHeadAttention"))
    weight_elems, ffn, hidden = 0, 0, 0
    for n in m.graph.node:
        if n.op_type in ("DynamicQuantizeMatMul", "MatMulInteger", "QAttention", "MatMul", "Attention"):
            for i in n.input:
                t = inits.get(i)
                if t is not None and len(t.dims) == 2:
                    weight_elems += t.dims[0] * t.dims[1]
                    hidden = hidden or int(t.dims[0])
                    if (
                        "Attention" not in n.op_type
                    ):  # QKV is 3 × hidden wide; the FFN is the widest of the rest
                        ffn = max(ffn, int(t.dims[1]))
    return {
        "heads": int(heads),
        "hidden": hidden,
        "ffn": ffn,
        "weight_elems": weight_elems,
        "layers": layers,
        "kernels": len(m.graph.node),
        "gelu": ops["BiasGelu"] + ops["FastGelu"] + ops["Gelu"],
        "layernorm": ops["LayerNormalization"] + ops["SkipLayerNormalization"],
        "add": ops["Add"],
    }


def profile(export_dir: Path, variant: str, workload: str, threads: int) -> dict[str, Any]:
    """Per-op-type time of ``variant`` over ``workload``, batched as the runtime batches it."""
    from dmeta_embed.manifest import Manifest, Provider
    from dmeta_embed.runtime.batching import pad, plan_batches
    from dmeta_embed.runtime.embedder import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS
    from dmeta_embed.runtime.tokenize import TextTokenizer

    from .workloads import workload as make_workload

    manifest = Manifest.load(export_dir)
    path = export_dir / manifest.variants[variant].file
    tok = TextTokenizer(export_dir / manifest.tokenizer.file, manifest.max_length).encode(
        make_workload(workload)
    )
    budget = DEFAULT_BATCH_TOKENS[Provider.CPU]
    batches = [
        pad(tok.ids, idx, manifest.tokenizer.pad_token_id)
        for idx in plan_batches(tok.lengths, budget, DEFAULT_BATCH_SIZE)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        sess = _session(str(path), threads, profile=os.path.join(tmp, "p"))
        for ids, mask in batches[:3]:
            sess.run(None, {"input_ids": ids, "attention_mask": mask})
        t = time.perf_counter()
        for ids, mask in batches:
            sess.run(None, {"input_ids": ids, "attention_mask": mask})
        wall = time.perf_counter() - t
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    # the warm-up batches are in the profile too: scale shares to the timed wall
    total = sum(per_op.values()) or 1
    real = int(tok.lengths.sum())
    padded = sum(int(ids.size) for ids, _ in batches)
    return {
        "variant": variant,
        "workload": workload,
        "texts": len(tok.lengths),
        "tokens": real,
        "padded_tokens": padded,
        "batches": len(batches),
        "max_batch_tokens": budget,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(real / wall),
        "op_share": {k: round(v / total, 4) for k, v in per_op.most_common()},
        "cls_only_last_layer": "cls_only_last_layer" in manifest.export.get("graph_passes", []),
        "_shapes": [ids.shape for ids, _ in batches],
    }


def bound(prof: dict[str, Any], shape: dict[str, int], rates: dict[str, Any]) -> dict[str, Any]:
    """Lower bound on the workload's time: every GEMM at the int8 kernel rate, the attention math
    of each batch at the attention kernel rate measured nearest its length, all other work free."""
    hidden, ffn, layers = shape["hidden"], shape["ffn"], shape["layers"]
    shapes = prof["_shapes"]
    padded = sum(b * s for b, s in shapes)
    tail = (
        hidden * hidden + 2 * hidden * ffn if prof["cls_only_last_layer"] else 0
    )  # last layer: token 0 only
    gemm_ops = 2.0 * ((shape["weight_elems"] - tail) * padded + tail * sum(b for b, _ in shapes))
    t_gemm = gemm_ops / (rates["int8_gemm_tops"] * 1e12)
    att = {int(k): v for k, v in rates["attention_gflops"].items()}
    attn = t_attn = 0.0
    for b, s in shapes:
        flops = 4.0 * b * s * s * hidden * layers
        attn += flops
        t_attn += flops / (att[min(att, key=lambda x: abs(x - s))] * 1e9)
    ceiling = prof["tokens"] / (t_gemm + t_attn)
    out = {
        "gemm_tera_ops": round(gemm_ops / 1e12, 3),
        "attention_gflop": round(attn / 1e9, 1),
        "t_gemm_s": round(t_gemm, 3),
        "t_attention_s": round(t_attn, 3),
        "ceiling_tokens_per_s": round(ceiling),
        "achieved_tokens_per_s": prof["tokens_per_s"],
        "achieved_vs_ceiling": round(prof["tokens_per_s"] / ceiling, 3),
    }
    elem = rates.get("elementwise_gelem_per_s")
    if elem and "gelu" in shape:
        # GELU, LayerNorm and the residual/bias Adds at their measured kernel rates (CLS-only: the
        # last layer's run on one row per text); still ignores quantize passes, softmax, copies
        seqs = sum(b for b, _ in shapes)
        last = 1 if prof["cls_only_last_layer"] else 0
        per_layer_add = shape["add"] // max(1, layers)
        t_elem = 0.0
        for count, width, rate in (
            (shape["gelu"], ffn, elem["BiasGelu"]),
            (shape["layernorm"], hidden, elem["LayerNormalization"]),
            (per_layer_add * layers, hidden, elem["Add"]),
        ):
            per_layer = count // max(1, layers)
            n = (count - last * per_layer) * padded + last * per_layer * seqs
            t_elem += n * width / (rate * 1e9)
        out["t_elementwise_s"] = round(t_elem, 3)
        out["ceiling_with_elementwise_tokens_per_s"] = round(prof["tokens"] / (t_gemm + t_attn + t_elem))
    return out


def query_floor(path: Path, rates: dict[str, Any], threads: int) -> dict[str, Any]:
    """A 16-token query must stream every weight once and make every kernel call."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:  # count the kernels of the graph as onnxruntime runs it
        optimized = os.path.join(tmp, "opt.onnx")
        _session(str(path), threads, save_optimized=optimized)
        kernels = len(onnx.load(optimized, load_external_data=False).graph.node)
    sess = _session(str(path), threads)
    ids = np.full((1, 16), 1000, np.int64)
    ids[0, 0] = 101
    measured = _time(sess, {"input_ids": ids, "attention_mask": np.ones_like(ids)}, 1.0)
    stream = rates["weight_stream_16_rows"]["ms"]
    dispatch = kernels * rates["kernel_call_us"] / 1e3
    return {
        "kernels": kernels,
        "weight_stream_ms": stream,
        "dispatch_ms": round(dispatch, 3),
        "floor_ms": round(stream + dispatch, 2),
        "measured_ms": round(measured * 1e3, 2),
    }


def markdown(res: dict[str, Any]) -> str:
    k = res["kernels"]
    lines = [
        f"# Where the time goes — {res['model']} ({res['variant']}), {k['threads']} threads",
        "",
        f"{res['machine']}",
        "",
        "## Kernel rates at the model's shapes",
        "",
        "| kernel | measured |",
        "|---|---|",
        f"| int8 GEMM (DynamicQuantizeMatMul, 1024×{res['shape']['hidden']}×{res['shape']['ffn']}) "
        f"| {k['int8_gemm_tops']} TOPS |",
        f"| fp32 GEMM (same shape) | {k['fp32_gemm_gflops']} GFLOP/s |",
        "| fp32 attention math (MultiHeadAttention), by length | "
        + ", ".join(f"{s}: {v} GFLOP/s" for s, v in k["attention_gflops"].items())
        + " |",
        f"| stream all {k['weight_stream_16_rows']['weight_mb']} MB int8 weights, 16 rows "
        f"| {k['weight_stream_16_rows']['ms']} ms ({k['weight_stream_16_rows']['gb_per_s']} GB/s) |",
    ]
    lines += [f"| {name} | {v} G elements/s |" for name, v in k["elementwise_gelem_per_s"].items()]
    lines += [f"| one kernel call (chain of tiny Adds) | {k['kernel_call_us']} µs |"]
    q = res["query_floor"]
    lines += [
        "",
        f"**One 16-token query**: the graph runs {q['kernels']} kernels; streaming every int8 weight once "
        f"takes {q['weight_stream_ms']} ms and {q['kernels']} kernel calls at {k['kernel_call_us']} µs take "
        f"{q['dispatch_ms']} ms: floor **{q['floor_ms']} ms** with these kernels (measured through "
        f"onnxruntime: {q['measured_ms']} ms).",
    ]
    for w, p in res["profiles"].items():
        b = res["bounds"][w]
        lines += [
            "",
            f"## {w}: {p['texts']} texts, {p['tokens']:,} tokens ({p['padded_tokens']:,} padded), "
            f"{p['batches']} batches of ≤ {p['max_batch_tokens']} tokens",
            "",
            f"Achieved {p['tokens_per_s']:,} tokens/s. Lower bound with these kernels: GEMMs "
            f"{b['gemm_tera_ops']} T-ops → {b['t_gemm_s']} s, attention math {b['attention_gflop']} GFLOP → "
            f"{b['t_attention_s']} s, everything else free → ceiling **{b['ceiling_tokens_per_s']:,} tokens/s** "
            f"(achieved = {100 * b['achieved_vs_ceiling']:.0f} % of it)"
            + (
                f"; with GELU, LayerNorm and Adds at their kernel rates (+{b['t_elementwise_s']} s): "
                f"**{b['ceiling_with_elementwise_tokens_per_s']:,} tokens/s**."
                if "t_elementwise_s" in b
                else "."
            ),
            "",
            "| op | share of op time |",
            "|---|---|",
        ]
        lines += [f"| {op} | {100 * s:.1f} % |" for op, s in list(p["op_share"].items())[:10]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "out" / "dmeta-shaped")
    ap.add_argument("--variant", default="int8")
    ap.add_argument("--workloads", default="mixed,query,long")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "dmeta-shaped")
    args = ap.parse_args(argv)

    from benchmarks.machine import machine_info
    from dmeta_embed.manifest import Manifest
    from dmeta_embed.runtime.session import available_cpus

    threads = available_cpus()
    manifest = Manifest.load(args.model)
    path = args.model / manifest.variants[args.variant].file
    shape = model_shape(path)
    rates = kernel_rates(threads, shape["hidden"], shape["heads"], shape["ffn"], shape["weight_elems"])
    profiles, bounds = {}, {}
    for w in args.workloads.split(","):
        prof = profile(args.model, args.variant, w, threads)
        bounds[w] = bound(prof, shape, rates)
        prof.pop("_shapes")
        profiles[w] = prof
    res_query = query_floor(path, rates, threads)
    info = machine_info()
    res = {
        "model": str(args.model),
        "variant": args.variant,
        "shape": shape,
        "machine": f"{info['cpu_model']} ({', '.join(info['flags'])}) · {threads} threads · "
        f"onnxruntime {info['versions'].get('onnxruntime')}",
        "kernels": rates,
        "profiles": profiles,
        "bounds": bounds,
        "query_floor": res_query,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "ceiling.json").write_text(json.dumps(res, indent=1))
    (args.output / "ceiling.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
