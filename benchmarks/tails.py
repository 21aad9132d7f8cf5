"""The fidelity tail of each variant on degenerate input, family by family: what a probe set of
prose never shows. Held-out members of every family in ``dmeta_embed.texts.FAMILIES`` (a seed the
export never uses) are embedded with each variant of an exported folder and with the source model
(``dmeta_embed.export.verify``); the result is each variant's p0 / p0.1 / p1 / mean cosine over
all of them, its worst family and its worst texts.

    python -m benchmarks.tails out/minilm --per-family 12 --output benchmarks/results/minilm/amx/tails.json
    python -m benchmarks.tails out/minilm --per-family 12 --emulate Haswell --output .../avx2/tails.json

``--emulate Haswell`` runs the variants under ``qemu-x86_64 -cpu Haswell`` (user-mode emulation:
AVX2 kernels, no AVX-512, no VNNI) with the runtime told it is on that CPU (qemu-user shows the
host's /proc/cpuinfo), after computing the reference natively: the AVX2 class's tails on any x86
host. Slow (tens of times native speed); the runtime's int8 there feeds u8-shifted weights as on a
real AVX2 machine.

Real weights decide: run it on real all-MiniLM-L6-v2 and all-mpnet-base-v2 exports.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

#: what the runtime is told under ``--emulate`` (qemu-user passes the host's /proc/cpuinfo through)
EMULATED = {
    "Haswell": {
        "vendor_id": "GenuineIntel",
        "model name": "qemu-x86_64 -cpu Haswell (emulated)",
        "flags": "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt avx avx2 fma f16c bmi1 bmi2 movbe",
    },
}


def held_out(
    folder: Path, per_family: int, trust_remote_code: bool = False, reference_file: Path | None = None
) -> tuple[list[str], list[str], np.ndarray]:
    """The held-out members (families, texts) and the source model's vectors of them, read from
    ``reference_file`` when it exists (else computed, and written there when given)."""
    from dmeta_embed.export.verify import reference
    from dmeta_embed.manifest import Manifest
    from dmeta_embed.texts import HELD_OUT_SEED, degenerate_texts

    manifest = Manifest.load(folder)
    members = degenerate_texts(per_family, HELD_OUT_SEED, manifest.max_length)
    families = [f for f, _ in members]
    texts = [t for _, t in members]
    if reference_file is not None and reference_file.is_file():
        ref = np.load(reference_file)
        if ref.shape[0] != len(texts):
            raise SystemExit(f"{reference_file}: {ref.shape[0]} vectors for {len(texts)} texts")
        return families, texts, ref
    prompt = manifest.prompts.get(manifest.default_prompt_name or "", "")
    ref = reference(manifest, [prompt + t for t in texts], trust_remote_code)
    if reference_file is not None:
        np.save(reference_file, ref)
    return families, texts, ref


def tails(
    folder: Path,
    per_family: int,
    variants: list[str] | None = None,
    trust_remote_code: bool = False,
    reference_file: Path | None = None,
) -> dict[str, Any]:
    from dmeta_embed.export.verify import verify
    from dmeta_embed.manifest import Manifest
    from dmeta_embed.runtime.cpu import detect
    from dmeta_embed.texts import HELD_OUT_SEED

    families, texts, ref = held_out(folder, per_family, trust_remote_code, reference_file)
    out: dict[str, Any] = {
        "model": Manifest.load(folder).source.get("model"),
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
    p.add_argument("--reference", type=Path, default=None, help=".npy: read if it exists, else written")
    p.add_argument("--emulate", choices=sorted(EMULATED), default=None, help="run under qemu-x86_64 -cpu")
    p.add_argument("--as-cpu", choices=sorted(EMULATED), default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    names = [v for v in a.variants.split(",") if v] if a.variants else None
    if a.emulate:
        res = _emulated(a, argv)
    else:
        if a.as_cpu:
            from dmeta_embed.runtime import cpu

            block = EMULATED[a.as_cpu]
            cpu.read_cpuinfo = lambda path=cpu.CPUINFO: dict(block)  # type: ignore[assignment]
            cpu.detect.cache_clear()
        res = tails(a.folder, a.per_family, names, a.trust_remote_code, a.reference)
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


def _emulated(a: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """The reference natively, then the variants in this tool under qemu with the CPU's facts."""
    import shutil
    import subprocess
    import sys
    import tempfile

    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        raise SystemExit("--emulate needs qemu-x86_64 (apt-get install qemu-user)")
    with tempfile.TemporaryDirectory() as tmp:
        ref = a.reference or Path(tmp) / "reference.npy"
        out = Path(tmp) / "tails.json"
        held_out(a.folder, a.per_family, a.trust_remote_code, ref)  # natively: torch
        args = [str(a.folder), "--per-family", str(a.per_family), "--reference", str(ref)]
        args += ["--output", str(out), "--as-cpu", a.emulate]
        if a.variants:
            args += ["--variants", a.variants]
        cmd = [qemu, "-cpu", a.emulate, sys.executable, "-m", "benchmarks.tails", *args]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        res: dict[str, Any] = json.loads(out.read_text("utf-8"))
    res["emulated"] = f"qemu-x86_64 -cpu {a.emulate}"
    return res


if __name__ == "__main__":
    main()
