"""Build the Dmeta-shaped benchmark model: random weights, DMetaSoul/Dmeta-embedding's real config
(BERT-base: 12 layers, hidden 768, vocab 21128, 1024 positions, CLS pooling) and a synthetic CJK
vocab, then export it with all variants (int8-ov where the export-openvino extra is installed).
The benchmark on it is the **shape run**: it shows what the engines do at BERT-base size, but not
what real weights do to int8 (random weights quantize far better: every node stays int8, where
the export's fidelity search keeps some in float on real weights, which changes the speed too).
The real-weights runs (``make bench``: all-MiniLM-L6-v2, all-mpnet-base-v2) are the headline.

    python -m benchmarks.build_dmeta_shaped [--out out/dmeta-shaped] [--force]
    python -m benchmarks -m out/dmeta-shaped --peers

With network, skip this and run ``python -m benchmarks -m DMetaSoul/Dmeta-embedding --peers``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path


def build(out: Path, force: bool = False, seed: int = 0) -> Path:
    """``out``: the exported folder; the source (HF format, for the peers) goes to ``out``-src."""
    from dmeta_embed.errors import ModelLoadError
    from dmeta_embed.export import export_model
    from dmeta_embed.manifest import Manifest
    from tests.random_models import MARKER, build_model

    src = out.with_name(out.name + "-src")
    if force or not (src / "config.json").is_file():
        build_model(src, "dmeta", seed=seed)
    elif not (src / MARKER).is_file():  # built before the marker existed: it is random all the same
        (src / MARKER).write_text(json.dumps({"shape": "dmeta", "seed": seed}), "utf-8")
    try:
        if not force and Manifest.load(out).source.get("model") == str(src.resolve()):
            print(f"{out} is already exported from {src}; pass --force to rebuild")
            return out
    except ModelLoadError:
        pass
    t = time.perf_counter()
    import importlib.util

    variants = ["fp32", "fp16", "int8"]
    if all(importlib.util.find_spec(m) for m in ("nncf", "openvino")):  # the export-openvino extra
        variants.append("int8-ov")
    from dmeta_embed.export.builders import BUILDERS
    from dmeta_embed.manifest import Precision

    if BUILDERS[Precision.BF16].unavailable() is None:  # openvino, on a CPU with native bf16
        variants.append("bf16")
    export_model(str(src), out, variants=variants, force=True)
    print(f"exported {src} → {out} in {time.perf_counter() - t:.0f} s")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/dmeta-shaped"), help="exported folder to write")
    p.add_argument("--force", action="store_true", help="rebuild the source and re-export")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dmeta_embed").setLevel(logging.INFO)
    build(args.out, args.force, args.seed)


if __name__ == "__main__":
    main()
