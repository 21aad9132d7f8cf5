"""Per-row (per-token) int8 vs onnxruntime's per-tensor dynamic int8, on real weights.

    python -m benchmarks.investigations.int8_rows MODEL_DIR [--trust-remote-code] [--search] [--speed]

Builds the export's fused CPU backbone (``graph.export_backbone`` → ``graph.fuse`` →
``unfuse_skip_layernorm``), then for each recipe measures, against transformers + torch fp32:
fidelity on held-out texts (the probe set plus English texts of our own, degenerate ones
included), the same text alone vs inside a batch of 32 mixed-length texts, optionally how many
nodes the export's sensitivity search keeps float, and tokens/s (recipes interleaved in one
process, best of a few passes: the machine may be shared, so timings are noisy).

int8 files run as the runtime feeds them on this CPU: s8 weights shifted to u8 where the u8×s8
kernels saturate (``runtime.int8``), so the numbers are this CPU class's exact int8. Results go
to stdout as JSON (and ``--out``); docs/performance.md, "int8 with per-row activation scales",
records them.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

WORDS = (
    "the of and to in is was for on that with as by at from his her an which are be this had not "
    "but were they all one there been have has their who will more if no out so said what up its "
    "about into than them can only other new some could time these two may then do first any my now "
    "such like our over man me even most made after also did many before must through back years "
    "where much your way well down should because each just those people how too little state good "
    "very make world still own see men work long get here between both life being under never day "
    "same another know while last might us great old year off come since against go came right used "
    "database kernel latency throughput embedding vector quantization tokenizer transformer gradient"
).split()


def english_texts(n: int, seed: int = 99) -> list[str]:
    """Seeded English texts of 3–200 words, held out of every calibration set."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.choice([3, 5, 8, 12, 20, 40, 80, 200]) if i % 4 else rng.randint(3, 15)
        words = [rng.choice(WORDS) for _ in range(k)]
        out.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ""]))
    return out


def held_out(max_length: int) -> list[str]:
    from dmeta_embed.texts import probe_texts

    degenerate = [
        "",
        " ",
        " \t\n ",
        "😀🎉🚀👍🔥",
        "🙂",
        "word " * (max_length + 20),
        "the " * (max_length * 2),
        "a" * 600,
        "!!!???...",
        "12345 67890 " * 40,
    ]
    return probe_texts(max_length) + english_texts(64) + degenerate


def mixed_batch_texts(n: int, seed: int = 5) -> list[str]:
    return english_texts(n, seed)


class Model:
    """The fused fp32 CPU backbone of a model folder, with what the recipes need."""

    def __init__(self, path: Path, work: Path, trust_remote_code: bool) -> None:
        import onnx
        from transformers import AutoTokenizer

        from dmeta_embed.export import graph
        from dmeta_embed.export.source import resolve

        self.src = resolve(str(path), trust_remote_code=trust_remote_code)
        self.hidden = int(self.src.config["hidden_size"])
        backbone = work / "backbone.onnx"
        if not backbone.exists():
            graph.export_backbone(self.src.path, work / "raw.onnx", trust_remote_code=trust_remote_code)
            bb, _ = graph.fuse(work / "raw.onnx", int(self.src.config["num_attention_heads"]), self.hidden)
            graph.unfuse_skip_layernorm(bb)
            onnx.save(bb, str(backbone))
        self.backbone = onnx.load(str(backbone))
        self.tok = AutoTokenizer.from_pretrained(
            self.src.path, use_fast=True, trust_remote_code=trust_remote_code
        )

    def head(self, m):  # type: ignore[no-untyped-def]
        from dmeta_embed.export import graph

        return graph.append_head(m, self.src.pooling, self.src.normalize, self.hidden)

    def encode(self, texts: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
        enc = self.tok(texts, truncation=True, max_length=self.src.max_length, return_token_type_ids=False)
        ids = [np.array(i, np.int64) for i in enc["input_ids"]]
        return ids, np.array([len(i) for i in ids])


def session(model_bytes: bytes, threads: int = 2, shift: bool = True):  # type: ignore[no-untyped-def]
    """An onnxruntime CPU session with the runtime's options, s8 weights shifted where this CPU needs
    it (``shift=False``: 7-bit weights, which no CPU's u8×s8 kernels saturate)."""
    import onnxruntime as ort

    from dmeta_embed.runtime.cpu import detect
    from dmeta_embed.runtime.int8 import shift_int8_weights

    if shift and detect().int8_weights == "u8":
        model_bytes, _ = shift_int8_weights(model_bytes)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_mem_pattern = False
    so.log_severity_level = 3
    return ort.InferenceSession(
        model_bytes, so, providers=["CPUExecutionProvider"], disabled_optimizers=["SkipLayerNormFusion"]
    )


def run_batches(sess, ids: list[np.ndarray], order: list[list[int]], pad: int, dim: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = np.empty((len(ids), dim), np.float32)
    for idx in order:
        width = max(len(ids[i]) for i in idx)
        x = np.full((len(idx), width), pad, np.int64)
        mask = np.zeros_like(x)
        for r, i in enumerate(idx):
            x[r, : len(ids[i])] = ids[i]
            mask[r, : len(ids[i])] = 1
        out[idx] = sess.run(None, {"input_ids": x, "attention_mask": mask})[0]
    return out


def sorted_batches(lengths: np.ndarray, size: int = 16) -> list[list[int]]:
    order = [int(i) for i in np.argsort(lengths, kind="stable")]
    return [order[s : s + size] for s in range(0, len(order), size)]


#: what onnxruntime's per-tensor dynamic int8 quantizes: MatMuls and the fused Attention
PER_TENSOR_OPS = ("MatMul", "Attention")


def per_tensor_nodes(backbone) -> list[str]:  # type: ignore[no-untyped-def]
    """MatMul nodes with a constant weight, and fused Attention nodes, in graph order."""
    inits = {i.name for i in backbone.graph.initializer}
    return [
        n.name
        for n in backbone.graph.node
        if n.op_type == "Attention" or (n.op_type == "MatMul" and n.input[1] in inits)
    ]


def quantize_per_tensor(backbone, exclude: list[str], workdir: Path):  # type: ignore[no-untyped-def]
    """onnxruntime's own dynamic int8 (``quantize_dynamic``: one activation scale per batch),
    the export's int8 before per-row scales, kept here to compare against."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = workdir / "q.onnx"
    quantize_dynamic(
        backbone,
        out,
        op_types_to_quantize=list(PER_TENSOR_OPS),
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
        # the fused graph lacks value_info for some weights; without this quantize_dynamic fails
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
    )
    return onnx.load(str(out))


def recipes(
    model: Model, calib_feeds: list[dict[str, np.ndarray]]
) -> dict[str, Callable[[list[str]], object]]:
    """name → (exclude list → int8 backbone); the search calls them with the nodes to keep float."""
    import onnx

    from dmeta_embed.export import int8_calibration, int8_rows
    from dmeta_embed.export.attention_split import unfuse_attention

    tmp = Path(tempfile.mkdtemp(prefix="int8-rows-"))
    unfused = onnx.ModelProto()
    unfused.CopyFrom(model.backbone)
    unfuse_attention(unfused)

    def per_tensor(exclude):  # type: ignore[no-untyped-def]
        return quantize_per_tensor(model.backbone, list(exclude), tmp)

    def rows_attn_float(exclude):  # type: ignore[no-untyped-def]
        return int8_rows.quantize_rows(model.backbone, exclude)

    def rows(exclude):  # type: ignore[no-untyped-def]
        return int8_rows.quantize_rows(unfused, exclude)

    out = {"per-tensor": per_tensor, "rows, attention fp32": rows_attn_float, "rows": rows}
    if calib_feeds:
        head = model.head(unfused)
        stats = int8_calibration.ActivationStats(head, calib_feeds, sample_rows=1)
        smooth = int8_calibration.smoothing_scales(head, stats, alpha=0.5)

        def rows_smooth(exclude):  # type: ignore[no-untyped-def]
            return int8_rows.quantize_rows(unfused, exclude, smooth=smooth)

        out["rows + smooth 0.5"] = rows_smooth
        for sym in (False, True):
            for bits in (7, 8):
                if not sym and bits == 8:
                    continue

                def variant(exclude, sym=sym, bits=bits):  # type: ignore[no-untyped-def]
                    return int8_rows.quantize_rows(
                        unfused, exclude, smooth=smooth, weights=f"s{bits}", symmetric=sym
                    )

                out[f"{'sym' if sym else 'rows'} w{bits} + smooth 0.5"] = variant

        def rows_a7(exclude):  # type: ignore[no-untyped-def]
            return int8_rows.quantize_rows(unfused, exclude, smooth=smooth, weights="s8/a7")

        out["rows a7 + smooth 0.5"] = rows_a7  # 7-bit activations, 8-bit s8 weights unshifted: no saturation
    return out


def shifted(name: str) -> bool:
    """Whether a recipe's file runs with the u8 weight shift (7-bit weights need none)."""
    return "w7" not in name and "a7" not in name


def nodes_of(name: str, model: Model) -> Callable[[object], list[str]]:
    from dmeta_embed.export import int8_rows

    if name == "per-tensor":
        return per_tensor_nodes
    return int8_rows.row_quantizable  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--work", type=Path, default=None, help="cache folder for the fused backbone")
    p.add_argument("--search", action="store_true", help="run the export's sensitivity search per recipe")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--smooth", action="store_true", help="also SmoothQuant-style rescale before per-row")
    p.add_argument("--only", default="", help="comma-separated recipe names")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-fidelity", action="store_true", help="skip the fidelity and invariance checks")
    p.add_argument("--keep-from", type=Path, default=None, help="a --search run's JSON: keep its nodes float")
    p.add_argument("--passes", type=int, default=3, help="speed passes (recipes take turns)")
    p.add_argument("--speed-texts", type=int, default=256, help="mixed-length texts per speed pass")
    p.add_argument(
        "--probe-every", type=int, default=4, help="every Nth held-out text in the invariance check"
    )
    a = p.parse_args(argv)

    from dmeta_embed.export import variants as derive
    from dmeta_embed.export.reference import cosines, torch_embeddings
    from dmeta_embed.manifest import BARS, Precision
    from dmeta_embed.runtime.cpu import detect
    from dmeta_embed.texts import calibration_texts

    work = a.work or Path(tempfile.mkdtemp(prefix="int8-rows-model-"))
    work.mkdir(parents=True, exist_ok=True)
    model = Model(a.model, work, a.trust_remote_code)
    pad = int(model.tok.pad_token_id or 0)
    dim = model.hidden
    texts = held_out(model.src.max_length)
    ids, lengths = model.encode(texts)
    need_ref = not a.no_fidelity or a.search
    ref = torch_embeddings(
        model.src.path,
        texts if need_ref else texts[:1],
        model.src.pooling,
        model.src.normalize,
        model.src.max_length,
        trust_remote_code=a.trust_remote_code,
    )
    calib = calibration_texts() + english_texts(24, seed=7)
    c_ids, c_len = model.encode(calib)
    c_ref = torch_embeddings(
        model.src.path,
        calib if a.search else calib[:1],
        model.src.pooling,
        model.src.normalize,
        model.src.max_length,
        trust_remote_code=a.trust_remote_code,
    )

    def feeds(ids_, lengths_):  # type: ignore[no-untyped-def]
        for idx in sorted_batches(lengths_):
            width = max(len(ids_[i]) for i in idx)
            x = np.full((len(idx), width), pad, np.int64)
            m = np.zeros_like(x)
            for r, i in enumerate(idx):
                x[r, : len(ids_[i])] = ids_[i]
                m[r, : len(ids_[i])] = 1
            yield {"input_ids": x, "attention_mask": m}

    build = recipes(model, list(feeds(c_ids, c_len)) if a.smooth else [])
    if a.only:
        build = {k: v for k, v in build.items() if k in a.only.split(",")}
    result: dict[str, object] = {
        "model": model.src.model_id,
        "cpu": detect().describe(),
        "weights": "real",
        "held_out_texts": len(texts),
        "recipes": {},
    }

    # alone vs in a batch of 32: each probe text in slot 0 of 31 mixed-length others
    probes = list(range(len(texts)))[:: a.probe_every]
    others_ids, _ = model.encode(mixed_batch_texts(31))

    def invariance(sess) -> float:  # type: ignore[no-untyped-def]
        alone = run_batches(sess, ids, [[i] for i in probes], pad, dim)[probes]
        inside = np.empty_like(alone)
        for r, i in enumerate(probes):
            batch_ids = [ids[i], *others_ids]
            inside[r] = run_batches(sess, batch_ids, [list(range(32))], pad, dim)[0]
        return float(cosines(alone, inside).min())

    fp32 = model.head(model.backbone)
    models = {"fp32": fp32}
    # --keep-from: an earlier run's search results, so each recipe is built as its search left it
    kept_by = {}
    if a.keep_from:
        kept_by = {k: v["search"]["kept"] for k, v in json.loads(a.keep_from.read_text())["recipes"].items()}
    for name, make in build.items():
        t0 = time.perf_counter()
        models[name] = model.head(make(kept_by.get(name, [])))
        print(f"{name}: built in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    for name, m in models.items() if not a.no_fidelity else ():
        sess = session(m.SerializeToString(), shift=shifted(name))
        c = cosines(run_batches(sess, ids, sorted_batches(lengths), pad, dim), ref)
        worst = int(np.argmin(c))
        entry = {
            "min_cos": round(float(c.min()), 5),
            "mean_cos": round(float(c.mean()), 5),
            "worst_text": texts[worst][:40],
            "alone_vs_batch_min_cos": round(invariance(sess), 6),
            "int8_tensors": derive.check_int8_tensors(m) if name != "fp32" else 0,
        }
        result["recipes"][name] = entry  # type: ignore[index]
        print(name, json.dumps(entry, ensure_ascii=False), file=sys.stderr, flush=True)

    if a.search:
        goal = derive.target(BARS[Precision.INT8])
        for name, make in build.items():
            t0 = time.perf_counter()

            def score(m, make=make):  # type: ignore[no-untyped-def]
                sess = session(model.head(m).SerializeToString())
                return cosines(run_batches(sess, c_ids, sorted_batches(c_len), pad, dim), c_ref)

            base = model.backbone if name in ("per-tensor", "rows, attention fp32") else _unfused(model)
            found, kept, trials = search(make, nodes_of(name, model)(base), score, goal)
            c = cosines(
                run_batches(
                    session(model.head(found).SerializeToString()), ids, sorted_batches(lengths), pad, dim
                ),
                ref,
            )
            entry = result["recipes"].setdefault(name, {})  # type: ignore[union-attr]
            entry["search"] = {
                "kept_float": len(kept),
                "of": len(nodes_of(name, model)(base)),
                "kept": kept,
                "trials": trials,
                "seconds": round(time.perf_counter() - t0),
                "min_cos": round(float(c.min()), 5),
                "mean_cos": round(float(c.mean()), 5),
            }
            models[name] = model.head(found)
            print(name, "search", json.dumps(entry["search"]), file=sys.stderr, flush=True)

    if a.speed:
        result["speed"] = speed(models, model, pad, dim, a.passes, a.speed_texts)

    text = json.dumps(result, indent=1, ensure_ascii=False)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    return 0


def search(make, nodes: list[str], score, goal):  # type: ignore[no-untyped-def]
    """The export's search as it was for per-tensor int8 (2026-12-01), over any quantizer: all nodes
    int8; else rank nodes by the damage each does alone, then the fewest most-sensitive kept
    float (doubling, then bisection) that reach ``goal`` on the calibration texts."""
    trials = 0

    def ok(m) -> bool:  # type: ignore[no-untyped-def]
        nonlocal trials
        trials += 1
        c = score(m)
        return bool(c.min() >= goal.min_cos and c.mean() >= goal.mean_cos)

    full = make([])
    if ok(full):
        return full, [], trials
    sens = {}
    for n in nodes:
        trials += 1
        sens[n] = float(1.0 - score(make([x for x in nodes if x != n])).mean())
    ranked = sorted(nodes, key=lambda n: -sens[n])
    lo, hi, best = 0, 1, None
    while hi < len(nodes):
        m = make(ranked[:hi])
        if ok(m):
            best = (hi, m)
            break
        lo, hi = hi, hi * 2
    if best is None:
        hi = len(nodes)
        best = (hi, make(ranked))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        m = make(ranked[:mid])
        if ok(m):
            hi, best = mid, (mid, m)
        else:
            lo = mid
    return best[1], ranked[: best[0]], trials


_UNFUSED: dict[int, object] = {}


def _unfused(model: Model):  # type: ignore[no-untyped-def]
    import onnx

    from dmeta_embed.export.attention_split import unfuse_attention

    key = id(model)
    if key not in _UNFUSED:
        m = onnx.ModelProto()
        m.CopyFrom(model.backbone)
        unfuse_attention(m)
        _UNFUSED[key] = m
    return _UNFUSED[key]


def speed(
    models: dict[str, object], model: Model, pad: int, dim: int, passes: int = 3, n_texts: int = 256
) -> dict[str, object]:
    """tokens/s over ``n_texts`` mixed-length English texts in length-sorted batches of 32, and the p50 of
    one ~16-token text; 2 threads; recipes take turns each pass and keep their best."""
    texts = english_texts(n_texts, seed=11)
    ids, lengths = model.encode(texts)
    q_ids, _ = model.encode(["How do I reset my password when the login page keeps failing?"])
    sessions = {k: session(m.SerializeToString(), shift=shifted(k)) for k, m in models.items()}  # type: ignore[attr-defined]
    order = sorted_batches(lengths, 32)
    best = {k: float("inf") for k in sessions}
    lat: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        run_batches(s, ids, order[:2], pad, dim)
    for _ in range(passes):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            run_batches(s, ids, order, pad, dim)
            best[k] = min(best[k], time.perf_counter() - t0)
            for _ in range(20):
                t1 = time.perf_counter()
                run_batches(s, q_ids, [[0]], pad, dim)
                lat[k].append(time.perf_counter() - t1)
    tokens = int(lengths.sum())
    return {
        k: {
            "tokens_per_s": round(tokens / best[k]),
            "vs_fp32": round(best["fp32"] / best[k], 2),
            "query_p50_ms": round(1000 * statistics.median(lat[k]), 2),
            "query_tokens": int(len(q_ids[0])),
        }
        for k in sessions
    }


if __name__ == "__main__":
    raise SystemExit(main())
