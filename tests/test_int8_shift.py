"""The s8 → u8 weight shift that makes int8 exact on x86 CPUs without VNNI.

The AVX2 kernels are exercised for real under ``qemu-x86_64 -cpu Haswell`` (user-mode emulation:
AVX2, no AVX-512, no VNNI) where qemu is installed (``make test`` installs qemu-user where apt
can): whatever CPU runs the suite, onnxruntime there dispatches to its AVX2 kernels.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dmeta_embed.export.variants import check_int8_tensors
from dmeta_embed.runtime.int8 import shift_int8_weights

QEMU = shutil.which("qemu-x86_64")
# the emulated interpreter is this one: an x86_64 Linux binary
needs_qemu = pytest.mark.skipif(
    QEMU is None
    or not sys.platform.startswith("linux")
    or platform.machine().lower() not in ("x86_64", "amd64"),
    reason="qemu-x86_64 not installed (apt-get install qemu-user) or not x86_64 Linux",
)
K, N = 768, 32


def matmul_integer(path: Path, b: np.ndarray, zp: np.ndarray) -> None:
    g = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "azp", "bzp"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, K])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, N])],
        [
            numpy_helper.from_array(b, "B"),
            numpy_helper.from_array(np.array(0, np.uint8), "azp"),
            numpy_helper.from_array(zp, "bzp"),
        ],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


RUN = """
import sys, numpy as np, onnxruntime as ort
a = np.load(sys.argv[1])
for f in sys.argv[2:]:
    s = ort.InferenceSession(f, providers=["CPUExecutionProvider"])
    np.save(f + ".out.npy", s.run(None, {s.get_inputs()[0].name: a})[0])
"""


def run(tmp: Path, a: np.ndarray, models: list[Path], emulate: str | None = None) -> list[np.ndarray]:
    """Run each model on ``a`` in a fresh interpreter, natively or under ``qemu -cpu emulate``."""
    np.save(tmp / "a.npy", a)
    (tmp / "run.py").write_text(RUN)
    cmd = [sys.executable, str(tmp / "run.py"), str(tmp / "a.npy"), *map(str, models)]
    if emulate:
        cmd = [QEMU, "-cpu", emulate, *cmd]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    return [np.load(f"{m}.out.npy") for m in models]


@pytest.fixture(scope="module")
def s8_int8(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's int8 as an export on a CPU with exact u8×s8 kernels writes it (per-row,
    8-bit s8 weights): the file the runtime shifts on x86 without VNNI. Built here with those
    formats whatever this CPU is (an export here would write 7-bit or u8 weights)."""
    from dmeta_embed.export.attention_split import unfuse_attention
    from dmeta_embed.export.int8_rows import quantize_rows

    fp32 = onnx.load(str(tiny_export / "model.onnx"))
    unfuse_attention(fp32)
    path = tmp_path_factory.mktemp("s8") / "model.int8.onnx"
    onnx.save(quantize_rows(fp32, weights="s8"), str(path))
    return path


def test_shift_flips_every_int8_tensor_and_nothing_else(s8_int8: Path) -> None:
    data = s8_int8.read_bytes()
    shifted, n = shift_int8_weights(data)
    assert n == check_int8_tensors(onnx.load_from_string(data)) > 0
    before, after = onnx.load_from_string(data), onnx.load_from_string(shifted)
    old = {i.name: i for i in before.graph.initializer}
    for i in after.graph.initializer:
        src = old[i.name]
        if src.data_type == TensorProto.INT8:
            assert i.data_type == TensorProto.UINT8
            np.testing.assert_array_equal(
                numpy_helper.to_array(i).astype(np.int16), numpy_helper.to_array(src).astype(np.int16) + 128
            )
        else:
            assert i == src
    assert [n.op_type for n in after.graph.node] == [n.op_type for n in before.graph.node]
    assert shift_int8_weights(shifted)[1] == 0  # nothing int8 left


def test_check_refuses_an_int8_weight_without_zero_point(tmp_path: Path) -> None:
    b = np.ones((K, N), np.int8)
    g = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, K])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, N])],
        [numpy_helper.from_array(b, "B")],
    )
    with pytest.raises(ValueError, match="no int8 weight zero point"):
        check_int8_tensors(helper.make_model(g))


@needs_qemu
def test_avx2_kernels_saturate_s8_and_not_u8(tmp_path: Path) -> None:
    """Under AVX2 kernels the u8×s8 product saturates; the shifted u8×u8 one is exact."""
    rng = np.random.default_rng(0)
    b = rng.integers(-128, 128, size=(K, N)).astype(np.int8)
    b[:, 0] = 127  # every pair sum 255·127·2 overflows int16
    matmul_integer(tmp_path / "s8.onnx", b, np.zeros(N, np.int8))
    shifted, n = shift_int8_weights((tmp_path / "s8.onnx").read_bytes())
    assert n == 2
    (tmp_path / "u8.onnx").write_bytes(shifted)
    a = rng.integers(0, 256, size=(4, K)).astype(np.uint8)
    a[0] = 255
    exact = a.astype(np.int64) @ b.astype(np.int64)
    s8, u8 = run(tmp_path, a, [tmp_path / "s8.onnx", tmp_path / "u8.onnx"], emulate="Haswell")
    np.testing.assert_array_equal(u8, exact)
    assert np.abs(s8 - exact).max() > 1_000_000  # saturated
    native = run(tmp_path, a, [tmp_path / "u8.onnx"])[0]
    np.testing.assert_array_equal(native, exact)  # u8 is exact on this machine's kernels too


@needs_qemu
def test_shifted_int8_model_gives_the_same_vectors_on_avx2_as_here(
    tiny_export: Path, s8_int8: Path, tmp_path: Path
) -> None:
    """The whole int8 graph (per-row MatMulInteger) with u8 weights: the AVX2 kernels under
    emulation give the vectors this machine's kernels give (both exact); the unshifted file
    under AVX2 does not."""
    from dmeta_embed.runtime.embedder import Embedder

    s8 = tmp_path / "s8.onnx"
    shutil.copy(s8_int8, s8)
    u8 = tmp_path / "u8.onnx"
    u8.write_bytes(shift_int8_weights(s8.read_bytes())[0])
    emb = Embedder.load(tiny_export, variant="fp32")
    from dmeta_embed.runtime.batching import pad

    tok = emb.tokenizer.encode(
        ["胡子长得太快怎么办？", "在香港哪里买手表好", "好 " * 200, "The quick brown fox."]
    )
    ids, mask = pad(tok.ids, np.arange(len(tok.ids)), 0)
    np.save(tmp_path / "mask.npy", mask)
    two_inputs = RUN.replace(
        "{s.get_inputs()[0].name: a}",
        '{"input_ids": a, "attention_mask": np.load(sys.argv[1].replace("a.npy", "mask.npy"))}',
    )
    (tmp_path / "run2.py").write_text(two_inputs)
    np.save(tmp_path / "a.npy", ids)

    def go(models: list[Path], emulate: str | None) -> list[np.ndarray]:
        cmd = [sys.executable, str(tmp_path / "run2.py"), str(tmp_path / "a.npy"), *map(str, models)]
        subprocess.run(
            ([QEMU, "-cpu", emulate] if emulate else []) + cmd, check=True, capture_output=True, timeout=600
        )
        return [np.load(f"{p}.out.npy") for p in models]

    here_u8 = go([u8], None)[0]
    avx2_s8, avx2_u8 = go([s8, u8], "Haswell")
    np.testing.assert_allclose(
        avx2_u8, here_u8, atol=2e-5
    )  # same integers; float parts may round differently
    cos = (avx2_s8 * here_u8).sum(1)
    assert cos.min() < 0.999  # the unshifted file computes a different function on AVX2
