"""The pooling/normalisation head appended to the graph, checked against numpy formulas."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from dmeta_embed.export.graph import HIDDEN, append_head
from dmeta_embed.manifest import OUTPUT_NAME, Pooling

DIM = 8


def _identity_backbone() -> onnx.ModelProto:
    """A 'model' whose last_hidden_state is a graph input, so the head sees chosen values."""
    g = helper.make_graph(
        [helper.make_node("Identity", ["hidden_in"], [HIDDEN])],
        "g",
        [
            helper.make_tensor_value_info("hidden_in", TensorProto.FLOAT, ["b", "s", DIM]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"]),
        ],
        [helper.make_tensor_value_info(HIDDEN, TensorProto.FLOAT, ["b", "s", DIM])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _expected(h: np.ndarray, mask: np.ndarray, pooling: Pooling, normalize: bool) -> np.ndarray:
    if pooling == Pooling.CLS:
        v = h[:, 0]
    elif pooling == Pooling.MEAN:
        m = mask[..., None].astype(np.float32)
        v = (h * m).sum(1) / m.sum(1)
    else:
        v = h[np.arange(len(h)), mask.sum(1) - 1]
    if normalize:
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return v


@pytest.mark.parametrize("pooling", list(Pooling))
@pytest.mark.parametrize("normalize", [True, False])
def test_head_matches_numpy(pooling, normalize):
    model = append_head(_identity_backbone(), pooling, normalize, DIM)
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    h = rng.normal(size=(3, 5, DIM)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=np.int64)
    got = sess.run([OUTPUT_NAME], {"hidden_in": h, "attention_mask": mask})[0]
    assert got.shape == (3, DIM)
    np.testing.assert_allclose(got, _expected(h, mask, pooling, normalize), rtol=1e-5, atol=1e-6)
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
