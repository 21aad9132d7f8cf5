"""The fidelity tail of each variant on degenerate input, family by family: what a probe set of
prose never shows. Held-out members of every family in ``dmeta_embed.texts.FAMILIES`` (a seed the
export never uses) are embedded with each variant of an exported folder and with the source model
(``dmeta_embed.export.verify``); the result is each variant's p0 / p0.1 / p1 / mean cosine over
all of them, its worst family and its worst texts.

    python -m benchmarks.tails out/minilm --per-family 12 --output benchmarks/results/minilm/amx/tails.json

Real weights decide: run it on real all-MiniLM-L6-v2 and all-mpnet-base-v2 exports.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def tails(
    folder: Path, per_family: int, variants: list[str] | None = None, trust_remote_code: bool = False
) -> dict[str, Any]:
    from dmeta_embed.export.verify import reference, verify
    from dmeta_embed.manifest import Manifest
    from dmeta_embed.runtime.cpu import detect
    from dmeta_embed.texts import HELD_OUT_SEED, degenerate_texts

    manifest = Manifest.load(folder)
    members = degenerate_texts(per_family, HELD_OUT_SEED, manifest.max_length)
    families = [f for f, _ in members]
    texts = [t for _, t in members]
    prompt = manifest.prompts.get(manifest.default_prompt_name or "", "")
    ref = reference(manifest, [prompt + t for t in texts], trust_remote_code)
    out: dict[str, Any] = {
        "model": manifest.source.get("model"),
        "cpu": detect().describe(),
        "date": time.strftime("%Y-%m-%d"),
        "texts": len(texts),
        "per_family": per_family,
        "seed": HELD_OUT_SEED,
        "variants": {},
    }
    for check in verify(folder, texts, variants, ref=ref):
        if check.skipped:
            out["variants"][check.variant] = {"skipped": check.skipped}
            continue
        cos = check.cos
        by_family = {
            f: float(cos[[i for i, g in enumerate(families) if g == f]].min())
            for f in dict.fromkeys(families)
        }
        worst = min(by_family, key=by_family.__getitem__)
        out["variants"][check.variant] = {
            "p0": float(cos.min()),
            "p0.1": float(np.percentile(cos, 0.1)),
            "p1": float(np.percentile(cos, 1)),
            "mean": float(cos.mean()),
            "bar_min_cos": check.bar_min_cos,
            "meets": check.meets,
            "worst_family": worst,
            "min_by_family": by_family,
            "worst": [
                dict(w, family=families[w["index"]], text=w["text"][:80]) for w in check.worst(texts, 3)
            ],
            **({"note": check.note} if check.note else {}),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--per-family", type=int, default=12)
    p.add_argument("--variants", default=None, help="comma-separated (default: every variant)")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--output", type=Path, default=None)
    a = p.parse_args(argv)
    names = [v for v in a.variants.split(",") if v] if a.variants else None
    res = tails(a.folder, a.per_family, names, a.trust_remote_code)
    for name, v in res["variants"].items():
        if "skipped" in v:
            print(f"{name:8} skipped: {v['skipped']}")
            continue
        print(
            f"{name:8} p0 {v['p0']:.5f}  p0.1 {v['p0.1']:.5f}  p1 {v['p1']:.5f}  mean {v['mean']:.5f}  "
            f"bar {v['bar_min_cos']}  worst family {v['worst_family']}"
        )
    if a.output:
        a.output.parent.mkdir(parents=True, exist_ok=True)
        a.output.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", "utf-8")


if __name__ == "__main__":
    main()
