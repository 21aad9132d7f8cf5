"""Cross-encoders: exported as rerank folders (the classification head in the graph, never
dropped), scored through ``Reranker`` as sentence-transformers' ``CrossEncoder`` scores them, with
pairs cut as transformers cuts them, on conftest's tiny random cross-encoders (``ce_sources``,
built once per session): a BERT with token types (one label), an MPNet (one label, no token
types) and a BERT with 3 labels saved by CrossEncoder with a softmax activation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dmeta_embed.errors import ExportError, InputError, ModelLoadError, TooLongError
from dmeta_embed.manifest import Manifest
from dmeta_embed.rerank_records import Activation, ScoreFidelity, Task

pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

#: pairs over max_length (128 tokens) on either side, on both, an empty document, emoji
LONG = "在香港哪里买手表好，" * 40
PAIRS = [
    ("How do I stop my beard from growing so fast?", "胡子长得太快怎么办？"),
    ("香港买手表", LONG),
    (LONG, "今天北京的天气怎么样？"),
    (LONG, LONG + "后面"),
    ("q", ""),
    ("😀🎉", "iPhone 15 Pro 的价格是 7999 元。"),
]
DOCS = [
    "在香港哪里买手表好",
    "今天北京的天气怎么样？",
    "",
    "香港买手表哪里好" * 30,
    "胡子长得快怎么办？",
    "好 " * 200,
]


@pytest.fixture(scope="session")
def ce_exports(
    ce_sources: dict[str, Path], ce_export: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """name → ``ce_sources[name]`` exported (fp32); ``bert1`` is conftest's ``ce_export``."""
    from dmeta_embed.export import export_model

    root = tmp_path_factory.mktemp("cross-encoder-exports")
    out = {"bert1": ce_export}
    for name in ("mpnet1", "bert1-st", "bert3-st"):
        out[name] = root / name
        export_model(str(ce_sources[name]), out[name], variants=("fp32",))
    return out


def _cross_encoder(src: Path):  # type: ignore[no-untyped-def]
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(src), device="cpu")


def _reranker(folder: Path):  # type: ignore[no-untyped-def]
    from dmeta_embed import Reranker

    return Reranker.load(folder, variant="fp32")


@pytest.mark.parametrize("name", ["bert1", "mpnet1", "bert1-st"])
def test_predict_and_rank_equal_cross_encoder(
    name: str, ce_sources: dict[str, Path], ce_exports: dict[str, Path]
) -> None:
    ce, rr = _cross_encoder(ce_sources[name]), _reranker(ce_exports[name])
    want = ce.predict(PAIRS)
    got = rr.predict(PAIRS)
    assert got.shape == want.shape == (len(PAIRS),) and got.dtype == np.float32
    assert float(np.abs(got - want).max()) <= 1e-4
    assert list(np.argsort(-got)) == list(np.argsort(-want))
    # one pair alone gives its score alone, and the same score as inside the list
    assert abs(float(rr.predict(PAIRS[1])) - float(want[1])) <= 1e-4

    want_rank = ce.rank("香港买手表", DOCS, top_k=4, return_documents=True)
    got_rank = rr.rank("香港买手表", DOCS, top_k=4, return_documents=True)
    assert [r["corpus_id"] for r in got_rank] == [r["corpus_id"] for r in want_rank]
    assert [r["text"] for r in got_rank] == [r["text"] for r in want_rank]
    assert max(abs(g["score"] - float(w["score"])) for g, w in zip(got_rank, want_rank, strict=True)) <= 1e-4
    # raw logits: CrossEncoder's identity activation
    raw = ce.predict(PAIRS, activation_fn=__import__("torch").nn.Identity())
    assert float(np.abs(rr.predict(PAIRS, activation_fn="identity") - raw).max()) <= 1e-4


def test_three_labels_softmax_equal_cross_encoder(
    ce_sources: dict[str, Path], ce_exports: dict[str, Path]
) -> None:
    import torch

    m = Manifest.load(ce_exports["bert3-st"])
    assert m.rerank is not None and m.rerank.activation == Activation.SOFTMAX and m.rerank.num_labels == 3
    assert m.rerank.labels == {0: "contradiction", 1: "entailment", 2: "neutral"}
    ce, rr = _cross_encoder(ce_sources["bert3-st"]), _reranker(ce_exports["bert3-st"])
    got, want = rr.predict(PAIRS), ce.predict(PAIRS)
    assert got.shape == want.shape == (len(PAIRS), 3)
    assert float(np.abs(got - want).max()) <= 1e-4
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)
    # CrossEncoder's apply_softmax over raw logits (identity first)
    want_sm = ce.predict(PAIRS, activation_fn=torch.nn.Identity(), apply_softmax=True)
    got_sm = rr.predict(PAIRS, activation_fn="identity", apply_softmax=True)
    assert float(np.abs(got_sm - want_sm).max()) <= 1e-4
    with pytest.raises(InputError) as e:
        rr.rank("q", ["a", "b"])
    assert e.value.field == "documents"


def test_headless_export_cannot_come_back(ce_sources: dict[str, Path], ce_exports: dict[str, Path]) -> None:
    """A cross-encoder folder exports its classification head: task rerank, output logits of
    num_labels, equal to transformers' own sequence-classification logits (not a pooled,
    normalised embedding of the body)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    src = ce_sources["bert1"]
    m = Manifest.load(ce_exports["bert1"])
    assert m.task == Task.RERANK and m.output == "logits" and m.dim == 1 and not m.normalize
    assert m.inputs == ("input_ids", "attention_mask", "token_type_ids")
    fid = m.variants["fp32"].fidelity
    assert isinstance(fid, ScoreFidelity) and fid.passed and fid.batch_invariant and fid.n_pairs >= 60
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForSequenceClassification.from_pretrained(src).eval()
    enc = tok(
        [p[0] for p in PAIRS],
        [p[1] for p in PAIRS],
        truncation=True,
        max_length=128,
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        want = model(**enc).logits.numpy()
    got = _reranker(ce_exports["bert1"]).logits(PAIRS)
    assert got.shape == (len(PAIRS), 1)
    assert float(np.abs(got - want).max()) <= 1e-4
    # MPNet has one token type: the graph takes none
    assert Manifest.load(ce_exports["mpnet1"]).inputs == ("input_ids", "attention_mask")


@pytest.mark.parametrize("name", ["bert1", "mpnet1"])
def test_pair_truncation_ids_equal_transformers(
    name: str, ce_sources: dict[str, Path], ce_exports: dict[str, Path]
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ce_sources[name])
    rr = _reranker(ce_exports[name])
    got = rr.pipeline.prepare(PAIRS)
    # as CrossEncoder calls it: two lists (a lone ``tok(q, "")`` would drop the empty document's
    # [SEP]; the lists keep it, and so does the runtime)
    want = tok([p[0] for p in PAIRS], [p[1] for p in PAIRS], truncation=True, max_length=128)
    assert got.ids == want["input_ids"]
    if got.type_ids is not None:
        assert got.type_ids == want["token_type_ids"]
    assert got.truncated == [1, 2, 3] and max(got.lengths) == 128
    assert (got.type_ids is not None) == (name == "bert1")


def test_bad_input_errors(ce_exports: dict[str, Path]) -> None:
    rr = _reranker(ce_exports["bert1"])
    with pytest.raises(InputError) as e:
        rr.rank("q", [])
    assert e.value.field == "documents" and e.value.index is None
    with pytest.raises(InputError) as e:
        rr.rank("q", ["fine", 3])  # type: ignore[list-item]
    assert (e.value.field, e.value.index) == ("documents", 1)
    with pytest.raises(InputError) as e:
        rr.rank(None, ["a"])  # type: ignore[arg-type]
    assert e.value.field == "query"
    with pytest.raises(InputError) as e:
        rr.predict([])
    assert e.value.field == "texts"
    with pytest.raises(InputError) as e:
        rr.predict([("a", "b"), ("only one",)])  # type: ignore[list-item]
    assert (e.value.field, e.value.index) == ("texts", 1)
    with pytest.raises(TooLongError) as t:
        rr.pipeline.prepare([("q", "short"), ("q", LONG)], truncate=False, field="documents")
    assert (t.value.field, t.value.index) == ("documents", 1) and "max_length=128" in (t.value.reason or "")
    with pytest.raises(InputError) as e:
        rr.predict(PAIRS, activation_fn="tanh")
    assert e.value.field == "activation_fn"


def test_each_loader_refuses_the_other_task(
    ce_exports: dict[str, Path], tiny_src: Path, tmp_path: Path
) -> None:
    from dmeta_embed import Embedder, Reranker
    from dmeta_embed.export import export_model

    with pytest.raises(ModelLoadError, match="Reranker.load"):
        Embedder.load(ce_exports["bert1"])
    embed = tmp_path / "embed"
    m = export_model(str(tiny_src), embed, variants=("fp32",))
    assert m.task == Task.EMBED and m.rerank is None and m.output == "sentence_embedding"
    with pytest.raises(ModelLoadError, match="Embedder.load"):
        Reranker.load(embed)


def test_manifest_round_trip_and_old_folders(ce_exports: dict[str, Path]) -> None:
    m = Manifest.load(ce_exports["bert3-st"])
    assert Manifest.from_dict(m.to_dict()) == m
    d = m.to_dict()
    assert d["task"] == "rerank" and d["variants"]["fp32"]["fidelity"]["kind"] == "score"
    # a folder written before rerank support has no task key: it reads as embed
    old = json.loads(json.dumps(d))
    for k in ("task", "rerank"):
        old.pop(k)
    old["output"] = "sentence_embedding"
    assert Manifest.from_dict(old).task == Task.EMBED
    with pytest.raises(ModelLoadError):
        Manifest.from_dict(d | {"rerank": None})


def test_activation_read_as_sentence_transformers_reads_it(
    ce_sources: dict[str, Path], tmp_path: Path
) -> None:
    from dmeta_embed.export.rerank_source import rerank_spec

    cfg = json.loads((ce_sources["bert3"] / "config.json").read_text())
    # no sentence-transformers key: CrossEncoder's default (identity for several labels)
    assert rerank_spec(ce_sources["bert3"], cfg).activation == Activation.IDENTITY
    one = json.loads((ce_sources["bert1"] / "config.json").read_text())
    assert rerank_spec(ce_sources["bert1"], one).activation == Activation.SIGMOID
    # 5.x: config_sentence_transformers.json
    assert rerank_spec(ce_sources["bert3-st"], cfg).activation == Activation.SOFTMAX
    # 4.x and older keys of config.json
    nested = one | {"sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}}
    assert rerank_spec(tmp_path, nested).activation == Activation.IDENTITY
    legacy = one | {"sbert_ce_default_activation_function": "torch.nn.modules.activation.Softmax"}
    assert rerank_spec(tmp_path, legacy).activation == Activation.SOFTMAX
    with pytest.raises(ExportError, match="Tanh"):
        rerank_spec(
            tmp_path, one | {"sbert_ce_default_activation_function": "torch.nn.modules.activation.Tanh"}
        )
    assert rerank_spec(tmp_path, one, activation="identity").activation_from == "flag"


def test_inspect_and_cli_rerank(
    ce_sources: dict[str, Path], ce_exports: dict[str, Path], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from dmeta_embed.cli import cli, summary

    text = summary(ce_exports["bert1"])
    assert "rerank (cross-encoder)" in text and "sigmoid" in text and "fp32 on cpu" in text
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(d for d in DOCS if d) + "\n", "utf-8")
    res = CliRunner().invoke(
        cli,
        [
            "rerank",
            str(ce_exports["bert1"]),
            "--query",
            "香港买手表",
            "--documents",
            str(docs),
            "--top-k",
            "3",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    want = _cross_encoder(ce_sources["bert1"]).rank("香港买手表", [d for d in DOCS if d], top_k=3)
    assert [r["corpus_id"] for r in got] == [int(r["corpus_id"]) for r in want]
    raw = CliRunner().invoke(
        cli,
        ["rerank", str(ce_exports["bert1"]), "-q", "香港买手表", "-d", str(docs), "--raw-scores", "--json"],
    )
    assert raw.exit_code == 0 and any(r["score"] < 0 or r["score"] > 1 for r in json.loads(raw.output))


def test_quantizers_leave_the_head_fp32(
    ce_sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """int8 and int8-ov quantize the body and leave the classification head's MatMuls fp32 (float
    weights, no int8 op, no DequantizeLinear on their inputs): the same head in every variant."""
    pytest.importorskip("nncf")
    import onnx
    from onnx import numpy_helper

    from dmeta_embed.export import export_model
    from dmeta_embed.export.builders import int8, int8_ov
    from dmeta_embed.export.rerank_head import is_head

    # a goal any graph meets: both searches keep their first, fully quantized candidate
    monkeypatch.setattr(int8, "MARGIN", 1e6)
    monkeypatch.setattr(int8_ov, "MARGIN", 1e6)
    out = tmp_path / "q"
    export_model(str(ce_sources["bert1"]), out, variants=("int8", "int8-ov"), allow_low_fidelity=True)
    for file in ("model.int8.onnx", "model.int8-ov.onnx"):
        g = onnx.load(str(out / file)).graph
        made_by = {o: n for n in g.node for o in n.output}
        inits = {i.name: i for i in g.initializer}
        head = [n for n in g.node if is_head(n.name) and n.op_type.startswith("MatMul")]
        assert len(head) == 2 and {n.op_type for n in head} == {"MatMul"}, file
        for n in head:
            assert numpy_helper.to_array(inits[n.input[1]]).dtype == np.float32, (file, n.name)
            assert made_by[n.input[0]].op_type != "DequantizeLinear", (file, n.name)
        # the body is quantized: the checks above are not of a graph that quantized nothing
        int8_weights = [
            i.name for i in g.initializer if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
        ]
        assert len(int8_weights) >= 8, (file, len(int8_weights))  # 2 layers, 4+ MatMuls each


def test_int8_ov_weights_float_ends_with_the_embedding_tables(
    ce_sources: dict[str, Path], tmp_path: Path
) -> None:
    """Where int8 weights alone miss int8-ov's goal (the tiny random model does) and every MatMul
    role is float, the embedding tables NNCF stores in int8 become float too, recorded as such."""
    pytest.importorskip("nncf")
    import onnx

    from dmeta_embed.export import export_model

    out = tmp_path / "ov"
    export_model(str(ce_sources["bert1"]), out, variants=("int8-ov",), allow_low_fidelity=True)
    g = onnx.load(str(out / "model.int8-ov.onnx")).graph
    tables = {i.name for i in g.initializer}
    lookups = [n.name for n in g.node if n.op_type == "Gather" and n.input[0] in tables]
    float_weights = Manifest.load(out).variants["int8-ov"].int8.float_weights
    assert len(lookups) == 3 and set(lookups) <= set(float_weights)  # word, position, token type
    assert not [n.name for n in g.node if n.op_type == "DequantizeLinear"]
