"""Where onnxruntime's int8 time goes on this CPU: its integer GEMM kernels alone (MatMulInteger
for each operand signedness and zero-point form our int8 files use, against fp32 MatMul), then an
exported folder's int8 and fp32 files profiled per operator type.

    python -m benchmarks.investigations.ort_int8_kernels [out/mpnet] [--rows 16,640] [--batch 32x20]
        [--shapes 768x3072,3072x768,768x768,768x2304,384x1536]

Each GEMM is one K × N projection (default: BERT-base's FFN, 768 × 3072) with random matrices on
``rows`` token rows, 2 threads, 50 calls after 5 warm-ups; besides the MatMulInteger forms,
``MatMulNBits`` with 8-bit (blocks of 32 and 128) and 4-bit weights at ``accuracy_level=4`` (int8
compute, activations quantized per row and block at run time), whose fast kernels exist for some
CPU classes only. The profile (onnxruntime's own profiler, 15 runs of one ``batch``) sums kernel
time per operator type. JSON lines to stdout. Figures: docs/performance.md, "AMX" and "AVX2".
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _session(model: Any, profile: bool = False):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tempfile.gettempdir(), "ort_int8_kernels")
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def gemm_cases(K: int = 768, N: int = 3072) -> dict[str, tuple[Any, str]]:  # noqa: N803
    """name → (one-node model, A's dtype)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    s8 = numpy_helper.from_array(rng.integers(-100, 100, (K, N)).astype(np.int8), "W")
    u8 = numpy_helper.from_array(rng.integers(0, 255, (K, N)).astype(np.uint8), "W")
    f32 = numpy_helper.from_array(rng.standard_normal((K, N)).astype(np.float32), "W")

    def model(node: Any, inits: list[Any], a: int, y: int) -> Any:
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("A", a, [None, K])],
            [helper.make_tensor_value_info("Y", y, [None, N])],
            inits,
        )
        m = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
        )
        m.ir_version = 8
        return m

    def zp(name: str, value: np.ndarray) -> Any:
        return numpy_helper.from_array(value, name)

    mmi = "MatMulInteger"
    return {
        "fp32 MatMul": (
            model(helper.make_node("MatMul", ["A", "W"], ["Y"]), [f32], TensorProto.FLOAT, TensorProto.FLOAT),
            "f32",
        ),
        "u8 x s8": (
            model(helper.make_node(mmi, ["A", "W"], ["Y"]), [s8], TensorProto.UINT8, TensorProto.INT32),
            "u8",
        ),
        "u8 x s8, per-column B zero point (asymmetric rows)": (
            model(
                helper.make_node(mmi, ["A", "W", "", "zb"], ["Y"]),
                [s8, zp("zb", np.zeros(N, np.int8))],
                TensorProto.UINT8,
                TensorProto.INT32,
            ),
            "u8",
        ),
        "u8 x s8 to float, A zero point 128 (symmetric rows)": (
            model(
                helper.make_node(
                    "MatMulIntegerToFloat", ["A", "W", "sa", "sb", "za", "zb"], ["Y"], domain="com.microsoft"
                ),
                [
                    s8,
                    zp("sa", np.array(1.0, np.float32)),
                    zp("sb", np.ones(N, np.float32)),
                    zp("za", np.array(128, np.uint8)),
                    zp("zb", np.zeros((), np.int8)),
                ],
                TensorProto.UINT8,
                TensorProto.FLOAT,
            ),
            "u8",
        ),
        "s8 x s8": (
            model(helper.make_node(mmi, ["A", "W"], ["Y"]), [s8], TensorProto.INT8, TensorProto.INT32),
            "s8",
        ),
        "u8 x u8 (the AVX2 shift)": (
            model(helper.make_node(mmi, ["A", "W"], ["Y"]), [u8], TensorProto.UINT8, TensorProto.INT32),
            "u8",
        ),
        **{
            f"MatMulNBits {bits}-bit, block {block}, accuracy_level 4": (
                _nbits(f32, bits, block, model),
                "f32",
            )
            for bits, block in ((8, 32), (8, 128), (4, 32))
        },
    }


def _nbits(w: Any, bits: int, block: int, model: Any) -> Any:
    """``w`` (an fp32 initializer) as one symmetric per-block ``MatMulNBits`` node."""
    from onnx import TensorProto, helper, numpy_helper

    W = numpy_helper.to_array(w)  # noqa: N806
    k, n = W.shape
    blocks = -(-k // block)
    padded = np.zeros((blocks * block, n), np.float32)
    padded[:k] = W
    b = padded.T.reshape(n, blocks, block)
    top = 2 ** (bits - 1) - 1
    scale = np.maximum(np.abs(b).max(-1) / top, 1e-12).astype(np.float32)
    q = (np.clip(np.round(b / scale[..., None]), -top - 1, top) + top + 1).astype(np.uint8)
    if bits == 4:  # two values per byte, the low nibble first
        q = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    node = helper.make_node(
        "MatMulNBits",
        ["A", "B", "S"],
        ["Y"],
        domain="com.microsoft",
        K=k,
        N=n,
        bits=bits,
        block_size=block,
        accuracy_level=4,
    )
    inits = [numpy_helper.from_array(q, "B"), numpy_helper.from_array(scale.reshape(-1), "S")]
    return model(node, inits, TensorProto.FLOAT, TensorProto.FLOAT)


def gemms(rows: list[int], shapes: list[tuple[int, int]]) -> None:
    rng = np.random.default_rng(1)
    for K, N in shapes:  # noqa: N806
        _gemms(rows, K, N, rng)


def _gemms(rows: list[int], K: int, N: int, rng: np.random.Generator) -> None:  # noqa: N803
    for name, (model, a) in gemm_cases(K, N).items():
        sess = _session(model)
        for m in rows:
            if a == "f32":
                x = rng.standard_normal((m, K)).astype(np.float32)
            else:
                x = rng.integers(0, 100, (m, K)).astype(np.int8 if a == "s8" else np.uint8)
            for _ in range(5):
                sess.run(None, {"A": x})
            t = time.perf_counter()
            for _ in range(50):
                sess.run(None, {"A": x})
            dt = (time.perf_counter() - t) / 50
            print(
                json.dumps(
                    {
                        "gemm": name,
                        "shape": f"{K}x{N}",
                        "rows": m,
                        "ms": round(dt * 1000, 3),
                        "gops": round(2 * m * K * N / dt / 1e9),
                    }
                ),
                flush=True,
            )


def profile(path: Path, batch: int, length: int) -> None:
    sess = _session(str(path), profile=True)
    ids = np.random.default_rng(0).integers(1000, 20000, (batch, length)).astype(np.int64)
    feed = {sess.get_inputs()[0].name: ids, sess.get_inputs()[1].name: np.ones_like(ids)}
    runs = 15
    for _ in range(runs):
        sess.run(None, feed)
    trace = sess.end_profiling()
    events = json.loads(Path(trace).read_text())
    os.remove(trace)
    per_op: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1000 / runs
    total = sum(per_op.values())
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:10]
    print(
        json.dumps(
            {
                "file": path.name,
                "batch": f"{batch}x{length}",
                "kernels_ms": round(total, 2),
                "top": {k: [round(v, 2), round(100 * v / total, 1)] for k, v in top},
            }
        ),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, nargs="?", help="an exported folder: profile its int8 and fp32 files")
    p.add_argument("--rows", default="16,640")
    p.add_argument("--batch", default="32x20", help="texts x tokens for the profile")
    p.add_argument("--shapes", default="768x3072", help="K x N of each GEMM, comma-separated")
    a = p.parse_args(argv)
    shapes = [(int(k), int(n)) for k, n in (s.split("x") for s in a.shapes.split(","))]
    gemms([int(r) for r in a.rows.split(",")], shapes)
    if a.folder is not None:
        b, length = (int(x) for x in a.batch.split("x"))
        for name in ("model.int8.onnx", "model.onnx"):
            if (a.folder / name).exists():
                profile(a.folder / name, b, length)
    return 0


if __name__ == "__main__":
    sys.exit(main())
