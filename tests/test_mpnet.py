"""MPNet as a model family: a tiny random MPNet exports without remote code, its relative-position
attention is fused into onnxruntime's Attention (the bias computed once per shape), and the
exported fp32 matches sentence-transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from dmeta_embed.export.reference import cosines
from dmeta_embed.manifest import BARS, Manifest, Pooling, Precision
from dmeta_embed.texts import EN, MIXED, ZH, probe_texts

TEXTS = [*EN, *ZH[:4], *MIXED, "", "word " * 200, "a"]


@pytest.fixture(scope="module")
def mpnet_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.random_models import build_mpnet

    return build_mpnet(tmp_path_factory.mktemp("tiny-mpnet-src"))


@pytest.fixture(scope="module")
def mpnet_export(mpnet_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dmeta_embed.export import export_model

    out = tmp_path_factory.mktemp("tiny-mpnet-export") / "model"
    # no trust_remote_code. fp16 once scored min cos ~0.9998 here, below its 0.9999 bar: its
    # relative-position buckets were computed in fp16 (now an integer table, relative_buckets.py)
    export_model(str(mpnet_src), out, variants=("fp32", "fp16", "int8"))
    return out


def test_manifest_says_mpnet_mean_pooling_and_offset_positions(mpnet_export: Path) -> None:
    m = Manifest.load(mpnet_export)
    assert m.source["model_type"] == "mpnet"
    assert m.pooling == Pooling.MEAN and m.normalize is True
    assert m.max_length == 384  # sentence_bert_config, within the 514 - 2 positions
    assert m.tokenizer.pad_token_id == 1
    assert set(m.variants) == {"fp32", "fp16", "int8"}
    assert all(v.fidelity.passed for v in m.variants.values())
    assert {"relative_position_attention", "relative_position_buckets_table"} <= set(m.export["graph_passes"])


@pytest.mark.parametrize("name", ["model.onnx", "model.fp16.onnx", "model.int8.onnx"])
def test_relative_buckets_are_an_integer_table_equal_to_transformers(
    mpnet_src: Path, mpnet_export: Path, name: str
) -> None:
    """No variant computes a bucket in floats (fp16 and bf16 moved tokens to the next bucket: a
    whole row of the bias); the table is MPNet's own ``relative_position_bucket`` for every
    relative position the model's positions allow."""
    import json

    import torch
    from onnx import numpy_helper
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    from dmeta_embed.export.relative_buckets import OFFSET, TABLE

    g = onnx.load(str(mpnet_export / name)).graph
    assert not [n for n in g.node if n.op_type == "Log"]
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    table, offset = inits[TABLE], int(inits[OFFSET])
    positions = json.loads((mpnet_src / "config.json").read_text())["max_position_embeddings"]
    assert offset == positions - 1 and table.shape == (2 * positions - 1,)
    rel = torch.arange(-(positions - 1), positions)
    expected = MPNetEncoder.relative_position_bucket(rel, num_buckets=32).numpy()
    np.testing.assert_array_equal(table, expected)


def test_attention_is_fused_with_the_bias_computed_once(mpnet_export: Path) -> None:
    for name in ("model.onnx",):
        g = onnx.load(str(mpnet_export / name)).graph
        attention = [n for n in g.node if n.op_type == "Attention"]
        assert len(attention) == 2, name  # one per layer
        assert not [n for n in g.node if n.op_type == "Softmax"], name  # no unfused attention left
        biases = {n.input[5] for n in attention}
        assert len(biases) == 1 and "" not in biases, name  # every layer reads one bias tensor
        # computed once from the relative-position table (one Gather of it in the whole graph)
        table = [n for n in g.node if n.op_type == "Gather" and "relative_attention_bias" in n.input[0]]
        assert len(table) == 1, name


def test_int8_quantizes_qkv_per_row_beside_the_biased_attention(mpnet_export: Path) -> None:
    """int8 splits each fused Attention into its QKV MatMul (per-row int8 like the others) and a
    MultiHeadAttention that keeps the relative-position bias; nothing is left unfused."""
    v = Manifest.load(mpnet_export).variants["int8"]
    assert "QAttention" not in v.ops and "Attention" not in v.ops and "Softmax" not in v.ops
    assert v.ops.get("MultiHeadAttention") == 2
    # 2 layers x (QKV, attention output, FFN in, FFN out)
    assert sum(v.int8.weights.values()) + len(v.kept_float) == 8
    g = onnx.load(str(mpnet_export / "model.int8.onnx")).graph
    mha = [n for n in g.node if n.op_type == "MultiHeadAttention"]
    assert len({n.input[5] for n in mha}) == 1 and all(n.input[5] for n in mha)  # one shared bias


def test_fp32_matches_sentence_transformers(mpnet_src: Path, mpnet_export: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    from dmeta_embed import Embedder

    texts = TEXTS + probe_texts(384)
    ref = st.SentenceTransformer(str(mpnet_src), device="cpu").encode(
        texts, batch_size=8, normalize_embeddings=True
    )
    e = Embedder.load(mpnet_export, variant="fp32")
    ours = e.encode(texts)
    c = cosines(ours, ref)
    assert c.min() >= BARS[Precision.FP32].min_cos, (c.min(), texts[int(c.argmin())][:40])
    # different texts give different vectors: the parity is not of a constant
    assert cosines(ref[:1].repeat(len(ref) - 1, 0), ref[1:]).min() < 0.99
    # the same text alone and inside a batch (the position ids and bias follow each text's length)
    alone = np.stack([e.encode([t])[0] for t in TEXTS[:6]])
    assert cosines(alone, ours[:6]).min() >= 0.99999
