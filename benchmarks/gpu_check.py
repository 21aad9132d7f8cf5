"""The GPU check behind ``benchmarks/gpu_check.sh`` (runbook: docs/gpu.md).

1. onnxruntime: where it was imported from and its providers; a one-node session must really run
   on CUDA (onnxruntime falls back to the CPU with only a log line when CUDA libraries are missing).
2. The Dmeta-shaped BERT-base (random weights: parity and speed depend on the shape) is built and
   exported fp32 + fp16; the export validates fp16 on CUDA when CUDA is there.
3. Which provider really ran each node of the fp16 graph (onnxruntime's profile): every compute
   node must be on CUDA.
4. fp16 on CUDA vs fp32 on the CPU at exactly 16, 256 and 1024 tokens.
5. Speed, each system in its own process (``gpu_check_bench``): ours (fp16, CUDA, IO binding) and
   torch fp16 on the same GPU, on mixed texts and queries, one-query p50, peak GPU memory.

The report is rewritten after every step, so a run cut short keeps what it measured.
Exit 0: CUDA really used and fp16 within the bar at every length; 1: a check failed; 2: the CUDA
provider cannot run at all. ``--device cpu`` runs the same steps on the CPU (tests, small sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import gpu_check_report as rep
from .gpu_check_bench import PARITY_TEXTS, exact_text, texts

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = (16, 256, 1024)
CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"
#: op types that carry the model's arithmetic: any of them on the CPU means CUDA is not doing the work
#: (the CUDA provider leaves small int64 shape computations on the CPU on purpose)
HEAVY_OPS = frozenset(
    {
        "Attention",
        "MultiHeadAttention",
        "MatMul",
        "Gemm",
        "FusedMatMul",
        "EmbedLayerNormalization",
        "SkipLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "LayerNormalization",
        "BiasGelu",
        "FastGelu",
        "Gelu",
        "Softmax",
    }
)


class CheckError(Exception):
    """The check cannot go on (CUDA provider missing or not really running); exit status 2."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="fp16 on CUDA: parity with fp32 and speed beside torch fp16")
    ap.add_argument(
        "--output", type=Path, help="report folder (default benchmarks/results/dmeta-shaped/<gpu>)"
    )
    ap.add_argument("--copy-to", type=Path, help="also write the report here (gpu_check.sh: $OUT)")
    ap.add_argument("--work", type=Path, default=Path("out/gpu-check"), help="model and export folder")
    ap.add_argument("--shape", choices=["dmeta", "tiny"], default="dmeta")
    ap.add_argument("--src", type=Path, help="with --export: reuse this model folder and its export")
    ap.add_argument(
        "--export", type=Path, help="an export of --src with fp32 and fp16 (skips building and exporting)"
    )
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: the steps without a GPU")
    ap.add_argument("--parity-texts", type=int, default=32, help="texts per parity length")
    ap.add_argument("--n-mixed", type=int, default=4096)
    ap.add_argument("--n-queries", type=int, default=4096)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--latency-runs", type=int, default=300)
    ap.add_argument("--bench-timeout", type=int, default=300, help="seconds each speed process may take")
    ap.add_argument("--no-peer", action="store_true", help="skip the torch fp16 peer")
    a = ap.parse_args(argv)
    if a.parity_texts < 1 or a.n_mixed < 1 or a.n_queries < 1 or a.passes < 1 or a.latency_runs < 1:
        ap.error("--parity-texts, --n-mixed, --n-queries, --passes and --latency-runs must be positive")
    if (a.src is None) != (a.export is None):
        ap.error("--src and --export go together")
    return a


def gpu_facts() -> dict[str, Any]:
    """The card as torch and nvidia-smi see it."""
    import torch

    props = torch.cuda.get_device_properties(0)
    facts: dict[str, Any] = {
        "name": torch.cuda.get_device_name(0),
        "memory_mib": round(props.total_memory / 2**20),
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "torch_cuda": torch.version.cuda,
    }
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        facts["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        facts["driver"] = None
    return facts


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "onnx", "tokenizers", "numpy", "sentence-transformers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _one_node_model() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    g = helper.make_graph([helper.make_node("MatMul", ["x", "x_t"], ["y"])], "smoke", [x], [y])
    g.initializer.append(
        helper.make_tensor("x_t", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel())
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # opset 17's; onnx 1.23 writes IR 14, which onnxruntime 1.31 refuses (max 13)
    return model.SerializeToString()


def cuda_smoke(ort: Any) -> dict[str, Any]:
    """A one-node session on CUDA: it must list CUDA first and compute the right answer. When the
    CUDA libraries torch loaded are not enough, ``onnxruntime.preload_dlls`` is tried once."""
    if CUDA_EP not in ort.get_available_providers():
        raise CheckError(
            f"onnxruntime {ort.__version__} at {ort.__file__} has no {CUDA_EP} "
            f"(providers: {ort.get_available_providers()}): this is the CPU build; "
            "install onnxruntime-gpu ahead of it (benchmarks/gpu_check.sh --offline, docs/gpu.md)"
        )
    via = "torch (imported first)"
    for attempt in range(2):
        s = ort.InferenceSession(_one_node_model(), providers=[CUDA_EP, CPU_EP])
        if s.get_providers()[0] == CUDA_EP:
            x = np.arange(8, dtype=np.float32).reshape(2, 4)
            if not np.allclose(s.run(None, {"x": x})[0], x):
                raise CheckError("the one-node CUDA session computed a wrong answer")
            return {"cuda_libraries": via, "session_providers": s.get_providers()}
        if attempt == 0 and hasattr(ort, "preload_dlls"):
            ort.preload_dlls(directory="")  # the nvidia-* wheels in site-packages
            via = "onnxruntime.preload_dlls()"
    raise CheckError(
        f"{CUDA_EP} is listed but a session falls back to the CPU (see onnxruntime's error above: "
        "CUDA 13 / cuDNN 9 libraries not found?)"
    )


def node_placement(profile: Path) -> dict[str, dict[str, int]]:
    """provider -> op type -> kernels run, from an onnxruntime profile (JSON trace events)."""
    out: dict[str, dict[str, int]] = {}
    for ev in json.loads(profile.read_text()):
        args = ev.get("args") or {}
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        ops = out.setdefault(str(args.get("provider", "?")), {})
        op = str(args.get("op_name", "?"))
        ops[op] = ops.get(op, 0) + 1
    return out


def placement_problems(placement: dict[str, dict[str, int]], expected: str) -> list[str]:
    """Why this placement does not prove ``expected`` ran the model: nothing on it, or compute ops elsewhere."""
    problems = []
    if not placement.get(expected):
        problems.append(f"no node ran on {expected} (nodes by provider: {placement or 'none'})")
    for provider, ops in placement.items():
        heavy = sorted(op for op in ops if op in HEAVY_OPS)
        if provider != expected and heavy:
            problems.append(f"compute ops ran on {provider}, not {expected}: {', '.join(heavy)}")
    return problems


def profile_placement(ort: Any, model: Path, work: Path, device: str, inputs: tuple[str, ...]) -> dict:
    """Run the graph twice in a profiling session on ``device``; return where its nodes ran."""
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(work / "fp16-profile")
    providers = [CUDA_EP, CPU_EP] if device == "cuda" else [CPU_EP]
    s = ort.InferenceSession(str(model), sess_options=so, providers=providers)
    feeds = {inputs[0]: np.full((4, 64), 100, dtype=np.int64), inputs[1]: np.ones((4, 64), dtype=np.int64)}
    for _ in range(2):
        s.run(None, feeds)
    placement = node_placement(Path(s.end_profiling()))
    return {
        "session": s.get_providers(),
        "nodes_by_provider": {p: sum(ops.values()) for p, ops in placement.items()},
        "placement": placement,
        "problems": placement_problems(placement, CUDA_EP if device == "cuda" else CPU_EP),
    }


def parity_stats(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Row-wise cosine of ``a`` against the reference ``b``: min, mean, and the largest element gap."""
    from dmeta_embed.export.reference import cosines

    c = cosines(a, b)
    return {
        "n": len(c),
        "min_cos": float(c.min()),
        "mean_cos": float(c.mean()),
        "max_abs_diff": float(np.abs(a - b).max()),
    }


def parity(fast: Any, reference: Any, n: int, lengths: tuple[int, ...] = LENGTHS) -> dict[str, dict]:
    """``fast`` (fp16 on the device) vs ``reference`` (fp32 on the CPU) on texts of exactly each length."""
    out = {}
    for length in lengths:
        items = [exact_text(length, seed=i) for i in range(n)]
        counts = set(fast.count_tokens(items))
        if counts != {length}:
            raise CheckError(f"parity texts meant to be {length} tokens are {sorted(counts)} tokens")
        out[str(length)] = parity_stats(fast.encode(items), reference.encode(items)) | {"tokens": length}
    return out


def run_bench(
    system: str, a: argparse.Namespace, work: Path, export: Path, src: Path, max_length: int
) -> dict:
    """One system's speed run in a fresh process (gpu_check_bench); its result, or its error."""
    js, emb, log = work / f"{system}.json", work / f"{system}.npy", work / f"{system}.log"
    # torch fp16 on a CPU is emulated and very slow: the --device cpu run (tests) gives the peer fp32
    variant = "fp16" if a.device == "cuda" or system == "ours" else "fp32"
    cmd = [sys.executable, "-m", "benchmarks.gpu_check_bench", "--system", system, "--device", a.device]
    cmd += ["--variant", variant]
    cmd += ["--model", str(export), "--src", str(src), "--max-length", str(max_length)]
    cmd += ["--n-mixed", str(a.n_mixed), "--n-queries", str(a.n_queries), "--passes", str(a.passes)]
    cmd += ["--latency-runs", str(a.latency_runs), "--json", str(js), "--emb", str(emb)]
    try:
        with log.open("w") as f:
            done = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=a.bench_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {a.bench_timeout} s (log: {log})"}
    if done.returncode != 0 or not js.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: {' | '.join(tail)}"}
    result: dict = json.loads(js.read_text())
    result["embeddings"] = emb
    return result


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    t_start = time.perf_counter()
    if a.device == "cuda":
        import torch  # noqa: F401  # first: onnxruntime's CUDA provider then finds the CUDA 13 / cuDNN 9 it loaded

        if not torch.cuda.is_available():
            print("gpu_check: error: torch sees no CUDA GPU here", file=sys.stderr)
            return 2
    import onnxruntime as ort

    report: dict[str, Any] = {
        "check": "benchmarks/gpu_check.py",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": a.device,
        "shape": a.shape,
        "versions": versions(),
        "onnxruntime": {
            "version": ort.__version__,
            "file": ort.__file__,
            "available": ort.get_available_providers(),
        },
    }
    if a.device == "cuda":
        report["gpu"] = gpu_facts()
    out = a.output or ROOT / "benchmarks/results/dmeta-shaped" / rep.gpu_slug(
        report.get("gpu", {}).get("name", "cpu")
    )
    work = a.work

    def step(name: str) -> None:
        report["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        rep.write(report, out)
        if a.copy_to:
            rep.write(report, a.copy_to)
        print(f"[gpu_check {report['elapsed_s']:7.1f} s] {name}", flush=True)

    try:
        if a.device == "cuda":
            report["onnxruntime"] |= cuda_smoke(ort)
        step("onnxruntime ready")
        return _measure(a, ort, report, work, step)
    except CheckError as e:
        report["failures"] = [str(e)]
        report["passed"] = False
        step("stopped")
        print(f"gpu_check: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the report keeps what broke (the traceback goes to the log)
        report["failures"] = [f"{type(e).__name__}: {e}"]
        report["passed"] = False
        step("crashed")
        raise


def _measure(a: argparse.Namespace, ort: Any, report: dict[str, Any], work: Path, step: Any) -> int:
    from dmeta_embed import Embedder
    from dmeta_embed.errors import FidelityError
    from dmeta_embed.export import export_model
    from dmeta_embed.manifest import Bar, Manifest, Precision
    from tests.random_models import build_model

    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if a.export is not None:
        src, export = a.src, a.export
        m = Manifest.load(export)
        report["export"] = {"reused": str(export)}
    else:
        src, export = build_model(work / "src", a.shape), work / "export"
        try:
            m = export_model(str(src), export, variants=["fp32", "fp16"], force=True)
            report["export"] = {}
        except FidelityError as e:
            # measure anyway (the report says it failed): the one GPU run should not end here
            report["export"] = {"error": str(e)}
            loose = {Precision.FP16: Bar(0.0, 0.0)}
            m = export_model(str(src), export, variants=["fp32", "fp16"], force=True, bars=loose)
    if "fp16" not in m.variants or "fp32" not in m.variants:
        raise CheckError(f"{export} has variants {sorted(m.variants)}; the check needs fp32 and fp16")
    fp16 = m.variants["fp16"]
    report["export"] |= {
        "seconds": round(time.perf_counter() - t, 1),
        "fp16_validated_on": fp16.validated_on,
        "fp16_fidelity": fp16.fidelity.to_dict(),
        "tools": m.export.get("tools"),
        "fusion": m.export.get("fusion"),
    }
    step("exported fp32 + fp16")

    report["providers"] = profile_placement(ort, export / fp16.file, work, a.device, m.inputs)
    step(f"fp16 nodes by provider: {report['providers']['nodes_by_provider']}")
    if report["providers"]["problems"]:
        raise CheckError("; ".join(report["providers"]["problems"]))

    fast = Embedder.load(export, variant="fp16", provider=a.device)
    reference = Embedder.load(export, variant="fp32", provider="cpu")
    report["parity"] = parity(fast, reference, a.parity_texts)
    step("parity at " + ", ".join(f"{k}: {v['min_cos']:.6f}" for k, v in report["parity"].items()))
    mixed = texts(a.n_mixed, 1)["mixed"][:PARITY_TEXTS]  # the texts whose vectors each speed run saves
    ref = reference.encode(mixed)
    del fast, reference  # the speed processes measure their own GPU memory; free ours first

    report["peer_parity"] = {}
    for system, key in (("ours", "ours"), ("torch", "torch_fp16")):
        if system == "torch" and a.no_peer:
            continue
        result = run_bench(system, a, work, export, src, m.max_length)
        emb = result.pop("embeddings", None)
        if emb is not None:
            report["peer_parity"][key] = parity_stats(np.load(emb), ref)
        report[key] = result
        step(f"{key}: mixed {rep._get(result, 'mixed', 'tokens_per_s')} tokens/s")

    report["targets"] = rep.targets(report)
    report["failures"] = rep.failures(report)
    report["passed"] = not report["failures"]
    step("PASSED" if report["passed"] else "FAILED: " + "; ".join(report["failures"]))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
