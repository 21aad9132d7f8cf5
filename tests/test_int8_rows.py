"""Per-row int8 (export.int8_rows, its calibration and the attention split): against a numpy
reference, batch invariance, the u8 shift.

Every int8 file is also run after the runtime's s8 → u8 weight shift (``runtime.int8``): u8×u8
is exact on every CPU class, so those assertions hold everywhere; the unshifted file is checked
for exactness only where this CPU's u8×s8 kernels do not saturate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from dmeta_embed.export.attention_split import unfuse_attention  # noqa: E402
from dmeta_embed.export.int8_rows import quantize_rows, row_quantizable  # noqa: E402
from dmeta_embed.export.variants import check_int8_tensors  # noqa: E402
from dmeta_embed.runtime.cpu import detect  # noqa: E402
from dmeta_embed.runtime.int8 import shift_int8_weights  # noqa: E402


def session(model: onnx.ModelProto, shift: bool) -> ort.InferenceSession:
    data = model.SerializeToString()
    if shift:
        data, n = shift_int8_weights(data)
        assert n == check_int8_tensors(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def numpy_per_row(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-row asymmetric u8 activations (range widened to include 0), per-column symmetric s8
    weights (±127), integer product, then both scales: written from the definition."""
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    y = np.empty((rows.shape[0], w.shape[1]))
    w_scale = np.abs(w).max(axis=0) / 127.0
    wq = np.clip(np.rint(w / w_scale), -127, 127)
    for r, row in enumerate(rows):
        lo, hi = min(row.min(), 0.0), max(row.max(), 0.0)
        s = max((hi - lo) / 255.0, 1e-12)
        zp = np.clip(np.rint(-lo / s), 0, 255)
        q = np.clip(np.rint(row / s) + zp, 0, 255)
        y[r] = ((q - zp) @ wq) * s * w_scale
    return y.reshape(*x.shape[:-1], w.shape[1]).astype(np.float32)


def micro_graph(w: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    k, n = w.shape
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"], name="mm"),
            helper.make_node("Add", ["xw", "b"], ["y"], name="bias"),
        ],
        "micro",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", n])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def micro() -> tuple[onnx.ModelProto, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    w = rng.normal(size=(64, 24)).astype(np.float32)
    bias = rng.normal(size=24).astype(np.float32)
    x = rng.normal(size=(3, 9, 64)).astype(np.float32)
    x[0, 4] *= 80.0  # one outlier token
    x[1, 2] = 0.0  # an all-zero row (padding-like)
    x[2, 5] = np.abs(x[2, 5]) + 0.5  # a row with no negative value: its range is widened to 0
    return micro_graph(w, bias), w, bias, x


@pytest.mark.parametrize("shift", [True, False], ids=["u8-shifted", "s8"])
def test_matches_numpy_reference(micro, shift: bool) -> None:
    model, w, bias, x = micro
    if not shift and detect().int8_weights == "u8":
        pytest.skip("this CPU's u8×s8 kernels saturate; the runtime always shifts here")
    q = quantize_rows(model)
    assert check_int8_tensors(q) == 2  # the weight and its zero point, nothing else
    y = session(q, shift).run(None, {"x": x})[0]
    expected = numpy_per_row(x, w) + bias
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4 * float(np.abs(expected).max()))
    # the reference is quantized, not the float product: the comparison can tell them apart
    assert np.abs(expected - (x @ w + bias)).max() > 1e-2


def numpy_rows(x: np.ndarray, w: np.ndarray, fmt: str, symmetric: bool, top: int = 255) -> np.ndarray:
    """Per-row activations (asymmetric u8, or symmetric ±127 around a fixed zero point) times
    per-column symmetric weights in ``fmt`` (±127, ±63 for s7; u8 is ±127 stored unsigned),
    written from the definition."""
    q = 63.0 if fmt == "s7" else 127.0
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    w_scale = np.abs(w).max(axis=0) / q
    wq = np.clip(np.rint(w / w_scale), -q, q)
    y = np.empty((rows.shape[0], w.shape[1]))
    for r, row in enumerate(rows):
        if symmetric:
            s = max(np.abs(row).max() / 127.0, 1e-12)
            xq = np.clip(np.rint(row / s), -127, 127)
        else:
            lo, hi = min(row.min(), 0.0), max(row.max(), 0.0)
            s = max((hi - lo) / top, 1e-12)
            zp = np.clip(np.rint(-lo / s), 0, top)
            xq = np.clip(np.rint(row / s) + zp, 0, top) - zp
        y[r] = (xq @ wq) * s * w_scale
    return y.reshape(*x.shape[:-1], w.shape[1]).astype(np.float32)


@pytest.mark.parametrize("symmetric", [False, True], ids=["asymmetric", "symmetric"])
@pytest.mark.parametrize("fmt", ["s8", "s7", "u8"])
def test_weight_formats_match_numpy_on_every_cpu(micro, fmt: str, symmetric: bool) -> None:
    """s7 and u8 weights run as exported and exactly on every CPU class (no u8×s8 pair sum can
    saturate); s8 is run as the runtime runs it here (shifted where this CPU saturates)."""
    from dmeta_embed.export.int8_rows import quantize_weight

    model, w, bias, x = micro
    q = quantize_rows(model, weights=fmt, symmetric=symmetric)
    wq, _, zp = quantize_weight(w, fmt)
    assert np.abs(wq.astype(int) - zp.astype(int)).max() == (63 if fmt == "s7" else 127)
    assert check_int8_tensors(q) == (0 if fmt == "u8" else 2)  # the weight and its zero point
    shift = fmt == "s8" and detect().int8_weights == "u8"
    y = session(q, shift).run(None, {"x": x})[0]
    expected = numpy_rows(x, w, fmt, symmetric) + bias
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4 * float(np.abs(expected).max()))
    assert np.abs(expected - (x @ w + bias)).max() > 1e-2  # quantized, not the float product


def test_seven_bit_rows_beside_s8_weights_never_saturate(micro) -> None:
    """s8/a7: asymmetric rows in 0..127 with 8-bit s8 weights run as exported (no shift) and
    equal the numpy reference on every CPU class: 2·127·127 < 2**15."""
    model, w, bias, x = micro
    q = quantize_rows(model, weights="s7", formats={"mm": "s8/a7"})
    y = session(q, False).run(None, {"x": x})[0]
    expected = numpy_rows(x, w, "s8", False, top=127) + bias
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4 * float(np.abs(expected).max()))
    assert np.abs(expected - (numpy_rows(x, w, "s8", False) + bias)).max() > 1e-3  # 7 bits, not 8


def test_per_node_formats_and_fp32(micro) -> None:
    """``formats`` overrides the default per node; "fp32" leaves that node a float MatMul."""
    model, w, bias, x = micro
    kept = quantize_rows(model, weights="s7", formats={"mm": "fp32"})
    assert [n.op_type for n in kept.graph.node] == ["MatMul", "Add"]
    np.testing.assert_allclose(
        session(kept, False).run(None, {"x": x})[0], x @ w + bias, rtol=1e-5, atol=1e-4
    )
    wide = quantize_rows(model, weights="s7", formats={"mm": "u8"})
    inits = {i.name: i for i in wide.graph.initializer}
    assert inits["mm/wq"].data_type == TensorProto.UINT8


def test_node_errors_rank_the_node_with_an_outlier_channel_first() -> None:
    """The numpy damage estimate sees what quantization does: a MatMul whose input has one huge
    channel loses the other channels' resolution (per row), a plain one does not."""
    from dmeta_embed.export.int8_calibration import ActivationStats, node_errors, smoothing_scales

    rng = np.random.default_rng(0)
    k = 32
    w1, w2 = (rng.normal(size=(k, k)).astype(np.float32) for _ in range(2))
    scale = np.ones(k, np.float32)
    scale[5] = 500.0  # one outlier channel into the second MatMul, whose weights for it are
    w2[5] /= 500.0  # small: the channel sets each row's range but carries little of the output
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="plain"),
            helper.make_node("Mul", ["h", "s"], ["hs"], name="outlier_channel"),
            helper.make_node("MatMul", ["hs", "w2"], ["y"], name="skewed"),
        ],
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", k])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(scale, "s"),
        ],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": rng.normal(size=(64, k)).astype(np.float32)} for _ in range(2)]
    stats = ActivationStats(model, feeds, sample_rows=100)
    assert stats.x_rows("plain").shape == (100, k)  # 50 from each of the 2 batches
    np.testing.assert_allclose(stats.x_amax("skewed")[5] / 500.0, stats.x_amax("plain").max(), rtol=10)
    err = node_errors(model, stats, "s8")
    assert err["skewed"] > 5 * err["plain"] > 0
    # smoothing moves the outlier into the weights and takes most of that damage away
    smooth = smoothing_scales(model, stats)
    assert node_errors(model, stats, "s8", smooth)["skewed"] < err["skewed"] / 3


def test_rows_do_not_see_their_neighbours(micro) -> None:
    """A row gives the same output alone and beside an outlier row: the scale is the row's own."""
    model, _, _, x = micro
    sess = session(quantize_rows(model), shift=True)
    together = sess.run(None, {"x": x})[0]
    for b, s in [(0, 3), (0, 5), (2, 5)]:
        alone = sess.run(None, {"x": x[b : b + 1, s : s + 1]})[0]
        np.testing.assert_allclose(alone[0, 0], together[b, s], rtol=1e-6, atol=1e-6)


def test_excluded_node_stays_float(micro) -> None:
    model, w, bias, x = micro
    q = quantize_rows(model, exclude=["mm"])
    assert check_int8_tensors(q) == 0
    y = session(q, shift=False).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x @ w + bias, rtol=1e-5, atol=1e-4)


# --- the tiny exported model ----------------------------------------------------------------


def _embed(model: onnx.ModelProto, export: Path, batches: list[list[str]]) -> list[np.ndarray]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(export / "tokenizer.json"))
    pad = json.loads((export / "manifest.json").read_text())["tokenizer"]["pad_token_id"]
    sess = session(model, shift=check_int8_tensors(model) > 0)
    out = []
    for texts in batches:
        ids = [e.ids for e in tok.encode_batch(texts)]
        width = max(len(i) for i in ids)
        x = np.full((len(ids), width), pad, np.int64)
        mask = np.zeros_like(x)
        for r, i in enumerate(ids):
            x[r, : len(i)] = i
            mask[r, : len(i)] = 1
        out.append(sess.run(None, {"input_ids": x, "attention_mask": mask})[0])
    return out


TEXTS = [
    "胡子长得太快怎么办？",
    "今天北京的天气怎么样？我想预订明天下午两点的会议室。",
    "ONNX Runtime runs transformer models quickly on CPUs.",
    "",
    "好 " * 40,
    "😀🎉🚀",
]


@pytest.fixture(scope="module")
def tiny_fp32(tiny_export: Path) -> onnx.ModelProto:
    return onnx.load(str(tiny_export / "model.onnx"))


@pytest.fixture(scope="module")
def tiny_unfused(tiny_fp32: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(tiny_fp32)
    assert unfuse_attention(m) > 0
    return m


@pytest.fixture(scope="module")
def tiny_rows(tiny_unfused: onnx.ModelProto) -> onnx.ModelProto:
    return quantize_rows(tiny_unfused)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_unfused_attention_is_the_same_function(tiny_fp32, tiny_unfused, tiny_export: Path) -> None:
    fused_ops = [x.op_type for x in tiny_fp32.graph.node]
    ops = [x.op_type for x in tiny_unfused.graph.node]
    assert "Attention" not in ops and ops.count("MultiHeadAttention") == fused_ops.count("Attention") > 0
    fused, unfused = (_embed(g, tiny_export, [TEXTS])[0] for g in (tiny_fp32, tiny_unfused))
    assert _cos(fused, unfused).min() > 0.99999


def test_tiny_graph_runs_on_cpu_provider_and_is_close_to_fp32(
    tiny_fp32, tiny_unfused, tiny_rows, tiny_export: Path
) -> None:
    ops = [x.op_type for x in tiny_rows.graph.node]
    assert ops.count("MatMulInteger") == len(row_quantizable(tiny_unfused)) > 0
    assert "MatMul" not in ops  # every MatMul with a constant weight, QKV included, is int8
    assert check_int8_tensors(tiny_rows) == 2 * ops.count("MatMulInteger")
    ref = _embed(tiny_fp32, tiny_export, [TEXTS])[0]
    got = _embed(tiny_rows, tiny_export, [TEXTS])[0]
    c = _cos(got, ref)
    assert c.min() > 0.99 and c.mean() > 0.995, c


def test_same_text_alone_or_in_a_batch(tiny_rows, tiny_export: Path) -> None:
    """Per-row scales: a text's vector does not depend on its batch (the per-tensor int8 may)."""
    others = [f"第{i}个句子，长度不同：" + "数据" * (i * 3) for i in range(31)]
    for text in TEXTS:
        alone, inside = _embed(tiny_rows, tiny_export, [[text], [text, *others]])
        assert _cos(alone, inside[:1])[0] >= 0.9999, text


def test_relative_attention_unfuses_with_its_bias(tmp_path_factory: pytest.TempPathFactory) -> None:
    """MPNet's fused Attention (with attention_bias) splits into QKV MatMul + MultiHeadAttention
    with the same function, and then quantizes per row like BERT's."""
    from dmeta_embed.export import export_model
    from tests.random_models import build_mpnet

    src = build_mpnet(tmp_path_factory.mktemp("rows-mpnet-src"))
    out = tmp_path_factory.mktemp("rows-mpnet") / "model"
    export_model(str(src), out, variants=("fp32",))
    fused = onnx.load(str(out / "model.onnx"))
    biased = [n for n in fused.graph.node if n.op_type == "Attention" and len(n.input) > 5 and n.input[5]]
    if not biased:
        pytest.skip("this export does not fuse MPNet's relative attention")
    m = onnx.ModelProto()
    m.CopyFrom(fused)
    assert unfuse_attention(m) == len(biased)
    texts = [*TEXTS, "word " * 200]
    ref = _embed(fused, out, [texts])[0]
    assert _cos(_embed(m, out, [texts])[0], ref).min() > 0.99999
    rows = quantize_rows(m)
    assert [x.op_type for x in rows.graph.node].count("MatMulInteger") == len(row_quantizable(m))
    c = _cos(_embed(rows, out, [texts])[0], ref)
    assert c.min() > 0.99, c
