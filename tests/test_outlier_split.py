"""int8-ov's outlier split (``export.outlier_split``) on a tiny random MPNet with one planted
outlier weight row, the shape of the rows that made real all-mpnet-base-v2 miss int8-ov's bar:
the rewrite is exact in fp32, the outlier rows stay float through NNCF, int8 weights lose far
less with them split out, and NNCF's output stays off stdout."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nncf")
pytest.importorskip("openvino")
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from dmeta_embed.export import openvino as ovx  # noqa: E402
from dmeta_embed.export import outlier_split  # noqa: E402

ROW = 5  # the planted outlier input channel of layer 0's FFN output projection
FFN_OUT = "/m/encoder/layer.0/output/dense/MatMul"


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    """The tiny MPNet's fp32 graph with mean pooling, one FFN output weight row scaled 60x."""
    from dmeta_embed.export import graph
    from dmeta_embed.manifest import Pooling
    from tests.random_models import MPNET_TINY, build_mpnet

    tmp = tmp_path_factory.mktemp("outlier-mpnet")
    src = build_mpnet(tmp / "src")
    graph.export_backbone(src, tmp / "raw.onnx")
    model = graph.append_head(onnx.load(str(tmp / "raw.onnx")), Pooling.MEAN, True, MPNET_TINY["hidden_size"])
    node = next(n for n in model.graph.node if n.name == FFN_OUT)
    init = next(i for i in model.graph.initializer if i.name == node.input[1])
    w = numpy_helper.to_array(init).copy()
    w[ROW] *= 60.0
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    return model


def _calib() -> object:
    from dmeta_embed.runtime.tokenize import Tokenized

    rng = np.random.default_rng(0)
    ids = [[0, *rng.integers(5, 500, n).tolist(), 2] for n in (3, 9, 17, 30, 60, 6, 12, 25)]
    return Tokenized(ids=ids, lengths=np.array([len(i) for i in ids]), truncated=[])


def _run(model: onnx.ModelProto, calib: object) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = []
    for ids in calib.ids:  # type: ignore[attr-defined]
        a = np.asarray([ids], np.int64)
        out.append(sess.run(None, {"input_ids": a, "attention_mask": np.ones_like(a)})[0][0])
    return np.stack(out)


def test_planted_row_is_found_and_the_split_is_exact_in_fp32(planted: onnx.ModelProto) -> None:
    calib = _calib()
    channels = outlier_split.outlier_channels(planted, outlier_split.activation_absmax(planted, calib))
    assert ROW in channels[FFN_OUT]
    assert all(len(c) <= outlier_split.MAX_CHANNELS for c in channels.values())
    split = outlier_split.split(planted, channels)
    # the unsplit fp32 graph is the independent expectation: the rewrite only reorders the sum
    np.testing.assert_allclose(_run(split, calib), _run(planted, calib), atol=2e-5)


def test_outlier_rows_stay_float_and_int8_weights_lose_less(
    planted: onnx.ModelProto, monkeypatch, capfd
) -> None:
    from dmeta_embed.export.reference import cosines

    calib = _calib()
    reference = _run(planted, calib)
    split_static = ovx.quantize_static(planted, calib)
    out, _ = capfd.readouterr()
    assert out == "", "NNCF's progress and log must not reach stdout"

    g = split_static.graph
    consts = {i.name for i in g.initializer}
    side = next(n for n in g.node if n.name == f"{FFN_OUT}/OutlierMatMul")
    assert side.input[1] in consts  # a float initializer, not a DequantizeLinear output
    dequantized = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in consts}
    main = next(n for n in g.node if n.name == FFN_OUT)
    assert main.input[1] in dequantized  # the rest of the weight is int8

    # a mask no activation quantizer follows is dropped, exactly; one a quantizer follows stays
    only_weights = ovx.unquantize(split_static, {q.name for q in ovx.activation_quantizers(split_static)})
    unmasked = outlier_split.drop_unused_masks(only_weights)
    assert not [n for n in unmasked.graph.node if n.name.endswith("/Mask")]
    np.testing.assert_allclose(_run(unmasked, calib), _run(only_weights, calib), atol=1e-6)
    n_masks = len([n for n in g.node if n.name.endswith("/Mask")])
    kept = outlier_split.drop_unused_masks(split_static)
    assert n_masks > 0 and len([n for n in kept.graph.node if n.name.endswith("/Mask")]) == n_masks

    monkeypatch.setattr(outlier_split, "outlier_channels", lambda model, amax: {})
    plain_static = ovx.quantize_static(planted, calib)

    def weights_only(m: onnx.ModelProto) -> onnx.ModelProto:
        return ovx.unquantize(m, {q.name for q in ovx.activation_quantizers(m)})

    # exact dequantisation (onnxruntime): the int8 weights' error alone, the same on every CPU
    loss_split = 1 - cosines(_run(weights_only(split_static), calib), reference)
    loss_plain = 1 - cosines(_run(weights_only(plain_static), calib), reference)
    assert loss_split.max() < 0.5 * loss_plain.max(), (loss_split.max(), loss_plain.max())
