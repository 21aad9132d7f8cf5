"""Export of the tiny Chinese BERT: manifest, checksums, graph structure, parity with torch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from dmeta_embed.export.reference import cosines, torch_embeddings
from dmeta_embed.manifest import BARS, OUTPUT_NAME, Manifest, Pooling, Precision, Provider, sha256_file
from dmeta_embed.texts import probe_texts

ZH = [
    "胡子长得太快怎么办？",
    "在香港哪里买手表好",
    "今天北京的天气怎么样？",
    "深度学习模型需要大量的数据和算力进行训练。",
]


def test_manifest_contents(tiny_export, tiny_src):
    m = Manifest.load(tiny_export)
    raw = json.loads((tiny_export / "manifest.json").read_text())
    for key in (
        "format_version",
        "source",
        "pooling",
        "normalize",
        "max_length",
        "dim",
        "tokenizer",
        "inputs",
        "output",
        "variants",
        "export",
    ):
        assert key in raw
    assert m.source["model"] == str(tiny_src.resolve())
    assert m.source["model_type"] == "bert"
    assert m.pooling == Pooling.CLS and m.source["pooling_from"] == "1_Pooling/config.json"
    assert m.normalize is True
    assert m.max_length == 1024  # sentence_bert_config max_seq_length, within 1024 positions
    assert m.dim == 64
    assert m.inputs == ("input_ids", "attention_mask")
    assert m.output == OUTPUT_NAME
    assert set(m.variants) == {"fp32", "fp16", "int8"}
    assert {"torch", "transformers", "onnx", "onnxruntime"} <= set(m.export["tools"])
    assert m.export["opset"] == 17 and m.export["wall_seconds"] > 0
    # recorded, not judged: the figures are in docs/performance.md, "Export time and memory"
    stages = m.export["stage_peak_rss_mb"]
    assert m.export["peak_rss_mb"] > 0 and m.export["peak_rss_mb"] == max(stages.values())
    assert {"reference", "torch_export", "fuse", "fp32", "fp16", "int8", "speed int8"} <= set(stages)


def test_files_and_checksums(tiny_export):
    m = Manifest.load(tiny_export)
    names = {p.name for p in tiny_export.iterdir()}
    assert names == {"manifest.json", "tokenizer.json", "model.onnx", "model.fp16.onnx", "model.int8.onnx"}
    for v in m.variants.values():
        path = tiny_export / v.file
        assert sha256_file(path) == v.sha256
        assert path.stat().st_size == v.size_bytes
    assert m.variants["fp16"].provider == Provider.CUDA
    assert m.variants["int8"].provider == Provider.CPU
    # written as onnxruntime's execution-provider names
    raw = json.loads((tiny_export / "manifest.json").read_text())["variants"]
    assert (raw["fp16"]["provider"], raw["int8"]["provider"]) == (
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    )


def test_the_manifest_written_reads_back_identically(tiny_export):
    """What the export writes, read into the typed manifest and written again, is the same file."""
    written = (tiny_export / "manifest.json").read_text("utf-8")
    again = json.dumps(Manifest.load(tiny_export).to_dict(), indent=2, ensure_ascii=False) + "\n"
    assert again == written


def test_fusion_recorded_and_present(tiny_export):
    m = Manifest.load(tiny_export)
    # tiny shape: 2 layers -> 1 EmbedLayerNorm, 2 Attention, 4 SkipLayerNorm, 2 BiasGelu
    assert m.export["fusion"] == {
        "EmbedLayerNormalization": 1,
        "Attention": 2,
        "SkipLayerNormalization": 4,
        "BiasGelu": 2,
    }
    ops = m.variants["fp16"].ops  # the CUDA variant keeps every fused op
    assert (
        ops["Attention"] == 2 and ops["SkipLayerNormalization"] == 4 and ops["EmbedLayerNormalization"] == 1
    )
    assert "LayerNormalization" not in ops and "Softmax" not in ops  # nothing left unfused


def test_cpu_variants_have_skip_layernorm_unfused(tiny_export):
    # onnxruntime 1.32's SkipLayerNormalization CPU kernel is ~4x slower than Add + LayerNormalization
    m = Manifest.load(tiny_export)
    assert "unfuse_skip_layernorm" in m.export["graph_passes"]
    for name in ("fp32", "int8"):
        ops = m.variants[name].ops
        assert "SkipLayerNormalization" not in ops, name
        assert ops["LayerNormalization"] == 4 and ops["EmbedLayerNormalization"] == 1, name
        assert "Softmax" not in ops, name  # attention stays fused
    assert m.variants["fp32"].ops["Attention"] == 2
    # parity of these files with torch is asserted by test_parity_with_torch_through_onnxruntime


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_runtime_keeps_skip_layernorm_unfused(tiny_export, tmp_path, variant):
    """onnxruntime must not fuse the slow SkipLayerNormalization back at load (graph as it runs)."""
    import collections

    import onnxruntime as ort

    from dmeta_embed.runtime.session import CPU_DISABLED_OPTIMIZERS, session_options

    def optimized_ops(disabled):
        so = session_options(1)
        so.optimized_model_filepath = str(tmp_path / f"{variant}-{bool(disabled)}.onnx")
        ort.InferenceSession(
            str(tiny_export / Manifest.load(tiny_export).variants[variant].file),
            so,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=disabled,
        )
        return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)

    for disabled in (CPU_DISABLED_OPTIMIZERS, None):  # the runtime's sessions, and plain ones
        ops = optimized_ops(disabled)
        assert "SkipLayerNormalization" not in ops and ops["LayerNormalization"] == 4, disabled


def test_cls_pooling_computes_last_layer_for_token_zero_only(tiny_export):
    m = Manifest.load(tiny_export)
    assert m.export["graph_passes"] == ["cls_only_last_layer", "unfuse_skip_layernorm"]
    model = onnx.load(str(tiny_export / "model.onnx"))
    sliced = [n for n in model.graph.node if n.name.startswith("cls_only/")]
    assert len(sliced) == 2 and all(n.op_type == "Gather" for n in sliced)
    # parity with torch (test_parity_with_torch_through_onnxruntime) shows the slice is exact


def test_int8_is_per_row_with_embeddings_fp32(tiny_export):
    """Every MatMul with a constant weight (QKV unfused from Attention included) is per-row int8 or
    listed as kept fp32; the manifest's counts are the graph's; the embedding tables stay fp32."""
    from dmeta_embed.export.int8_search import ladder, weight_format
    from dmeta_embed.runtime.cpu import detect

    model = onnx.load(str(tiny_export / "model.int8.onnx"))
    ops = [n.op_type for n in model.graph.node]
    v = Manifest.load(tiny_export).variants["int8"]
    assert v.int8.per_row
    # per layer: QKV, attention output, FFN in, FFN out; 2 layers
    assert "QAttention" not in ops and "Attention" not in ops and "DynamicQuantizeLinear" not in ops
    assert ops.count("MultiHeadAttention") == 2
    int8_nodes = ops.count("MatMulInteger") + ops.count("MatMulIntegerToFloat")
    assert int8_nodes + len(v.kept_float) == 8
    assert sum(v.int8.weights.values()) == int8_nodes
    # the formats are this CPU class's ladder (fp32 is what kept_float lists)
    assert set(v.int8.weights) <= {weight_format(r) for r in ladder(detect())} - {"fp32"}
    inits = {i.name: i for i in model.graph.initializer}
    int8 = sum(1 for i in inits.values() if i.data_type == onnx.TensorProto.INT8)
    assert v.int8_tensors == int8
    assert v.int8.saturation_free == (not v.int8.weights.get("s8"))
    # the embedding tables stay fp32
    emb = next(n for n in model.graph.node if n.op_type == "EmbedLayerNormalization")
    assert inits[emb.input[2]].data_type == onnx.TensorProto.FLOAT
    # batch invariance was measured at export: per-row scales make it exact up to float rounding
    assert v.fidelity.batch_min_cos is not None and v.fidelity.batch_min_cos >= 0.9999


def test_fp16_weights_with_fp32_io(tiny_export):
    model = onnx.load(str(tiny_export / "model.fp16.onnx"))
    big = [i for i in model.graph.initializer if np_size(i) > 1000]
    assert big and all(i.data_type == onnx.TensorProto.FLOAT16 for i in big)
    io = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)}
    assert io == {
        "input_ids": onnx.TensorProto.INT64,
        "attention_mask": onnx.TensorProto.INT64,
        OUTPUT_NAME: onnx.TensorProto.FLOAT,
    }


def np_size(t: onnx.TensorProto) -> int:
    return int(np.prod(t.dims)) if t.dims else 1


def test_pooling_is_inside_the_graph(tiny_export):
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        model = onnx.load(str(tiny_export / name))
        (out,) = model.graph.output
        assert out.name == OUTPUT_NAME
        dims = out.type.tensor_type.shape.dim
        assert len(dims) == 2 and dims[1].dim_value == 64  # [batch, dim], no sequence axis
        assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]


def test_fidelity_recorded_meets_bars(tiny_export):
    m = Manifest.load(tiny_export)
    for name, v in m.variants.items():
        bar = BARS[Precision(name)]
        assert v.fidelity.passed
        assert v.fidelity.min_cos >= bar.min_cos and v.fidelity.mean_cos >= bar.mean_cos
        assert v.fidelity.n_texts == len(probe_texts(1024))
        assert v.fidelity.max_tokens == 1024  # validated at full max length (truncated probe)


def test_parity_with_torch_through_onnxruntime(tiny_export, tiny_src):
    """Independent check of what the manifest claims: run each file, compare with torch."""
    from dmeta_embed import Embedder

    ref = torch_embeddings(tiny_src, ZH, Pooling.CLS, True, 1024)
    other = cosines(ref[:1].repeat(len(ZH), 0), ref)
    assert other[1:].max() < 0.99, "the tiny model must tell texts apart for parity to mean anything"
    for variant, bar in (("fp32", 0.99999), ("fp16", 0.9999), ("int8", 0.99)):
        got = Embedder.load(tiny_export, variant=variant, provider="cpu").encode(ZH)
        assert got.shape == (len(ZH), 64)
        assert cosines(got, ref).min() >= bar, variant


def test_tokenizer_json_built_from_vocab(tiny_export, tiny_src):
    from tokenizers import BertWordPieceTokenizer, Tokenizer

    assert not (tiny_src / "tokenizer.json").exists()
    tok = Tokenizer.from_file(str(tiny_export / "tokenizer.json"))
    assert tok.truncation["max_length"] == 1024
    assert tok.padding is None
    # WordPiece straight from vocab.txt, not through transformers: on transformers 5
    # BertTokenizerFast(vocab_file=...) ignores the file and maps every character to [UNK]
    ref = BertWordPieceTokenizer(str(tiny_src / "vocab.txt"), lowercase=True)
    for t in ZH:
        assert tok.encode(t).ids == ref.encode(t).ids


def test_int8_search_promotes_sensitive_nodes_when_bar_is_strict(tiny_src, tiny_export, tmp_path):
    """A bar the first rung cannot reach: nodes are promoted (wider weights, then fp32), each with
    its measured damage, and the result meets the bar."""
    from dmeta_embed.export import export_model
    from dmeta_embed.export.int8_search import ladder
    from dmeta_embed.manifest import Bar
    from dmeta_embed.runtime.cpu import detect

    m = export_model(
        str(tiny_src),
        tmp_path / "strict",
        variants=["int8"],
        bars={Precision.INT8: Bar(min_cos=0.9995, mean_cos=0.9998)},
    )
    v = m.variants["int8"]
    assert v.fidelity.passed and v.fidelity.min_cos >= 0.9995
    promoted = {**v.int8.promoted, **v.kept_float}
    assert 0 < len(promoted) <= 8
    assert all("damage" in r for r in promoted.values())
    rungs = ladder(detect())
    assert all(r.split(":")[0] in rungs[1:] for r in promoted.values())
    default = Manifest.load(tiny_export).variants["int8"]
    assert len(promoted) >= len({**default.int8.promoted, **default.kept_float})
    model = onnx.load(str(tmp_path / "strict" / "model.int8.onnx"))
    float_names = {n.name for n in model.graph.node if n.op_type == "MatMul"}
    assert set(v.kept_float) <= float_names
    assert set(m.variants) == {"int8"}


def test_max_length_and_pooling_flags(tiny_src, tmp_path, caplog):
    from dmeta_embed.export import export_model
    from tests.random_models import build_model

    m = export_model(str(tiny_src), tmp_path / "short", variants=["fp32"], max_length=128)
    assert m.max_length == 128 and m.variants["fp32"].fidelity.max_tokens == 128
    # no sentence-transformers files: --pooling decides, else CLS with a warning
    bare = build_model(tmp_path / "bare", "tiny", sentence_transformers_files=False)
    m = export_model(str(bare), tmp_path / "mean", variants=["fp32"], pooling="mean")
    assert m.pooling == Pooling.MEAN and m.source["pooling_from"] == "flag"
    with caplog.at_level("WARNING"):
        m = export_model(str(bare), tmp_path / "cls", variants=["fp32"])
    assert m.pooling == Pooling.CLS and "using CLS" in caplog.text
