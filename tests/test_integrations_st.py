"""The sentence-transformers v5 surface of Embedder, checked against sentence-transformers itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dmeta_embed import Embedder, InputError
from dmeta_embed.manifest import Manifest

PROMPTS = {"query": "query: ", "document": "passage: ", "cls": "Classify the topic: "}
#: the tiny model's synthetic vocab has no English words for these: "query: " and "passage: " would
#: both be [UNK] ":", and a query routed as a document would go unseen
TINY_PROMPTS = {"query": "查询：", "document": "文档：", "cls": "分类主题："}
QUERIES = ["how do plants make food", "最好的火锅在哪里", "capital of France"]
DOCS = [
    "Photosynthesis turns light, water and CO2 into sugar.",
    "重庆的火锅很有名，麻辣鲜香。",
    "Paris is the capital and largest city of France.",
    "A short one.",
]


def _with_prompts(src: Path, dest: Path, **extra: object) -> Path:
    shutil.copytree(src, dest)
    cfg_path = dest / "config_sentence_transformers.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    cfg.update({"prompts": PROMPTS, "similarity_fn_name": "cosine", **extra})
    cfg_path.write_text(json.dumps(cfg))
    return dest


def _export(src: Path, out: Path, **kw: object) -> Path:
    from dmeta_embed.export import export_model

    export_model(str(src), out, variants=("fp32",), **kw)  # type: ignore[arg-type]
    return out


# -- no model needed


def test_old_manifest_loads_with_defaults(tiny_export: Path) -> None:
    d = json.loads((tiny_export / "manifest.json").read_text())
    for k in ("prompts", "default_prompt_name", "similarity_fn_name", "truncate_dims"):
        d.pop(k, None)
    m = Manifest.from_dict(d)
    assert (m.prompts, m.default_prompt_name, m.similarity_fn_name, m.truncate_dims) == (
        {},
        None,
        "cosine",
        (),
    )
    again = Manifest.from_dict(m.to_dict() | {"prompts": {"q": "Q: "}, "truncate_dims": [64, 32]})
    assert again.prompts == {"q": "Q: "} and again.truncate_dims == (64, 32)


def test_no_prompts_no_truncation_by_default(tiny_export: Path) -> None:
    e = Embedder.load(tiny_export)
    assert e.prompts == {} and e.default_prompt_name is None and e.similarity_fn_name == "cosine"
    assert e.get_sentence_embedding_dimension() == e.dim and e.max_seq_length == e.max_length
    base = e.encode(QUERIES)
    np.testing.assert_array_equal(e.encode_query(QUERIES), base)
    np.testing.assert_array_equal(e.encode_document(QUERIES), base)
    with pytest.raises(InputError, match="no Matryoshka dims"):
        e.encode(QUERIES, truncate_dim=8)
    with pytest.raises(InputError, match="no Matryoshka dims"):
        Embedder.load(tiny_export, truncate_dim=8)
    with pytest.raises(InputError, match="not one of this model's prompts"):
        e.encode(QUERIES, prompt_name="query")


def test_similarity_matches_sentence_transformers_util() -> None:
    torch = pytest.importorskip("torch")
    from sentence_transformers import util

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 16)).astype(np.float32), rng.normal(size=(5, 16)).astype(np.float32)
    e = Embedder.__new__(Embedder)  # the similarity functions need no model
    e.manifest = type("M", (), {"similarity_fn_name": "cosine"})()  # type: ignore[assignment]
    for name, fn in [
        ("cosine", util.cos_sim),
        ("dot", util.dot_score),
        ("euclidean", util.euclidean_sim),
        ("manhattan", util.manhattan_sim),
    ]:
        e.similarity_fn_name = name
        got = e.similarity(a, b)
        assert got.dtype == np.float32 and got.shape == (3, 5)
        np.testing.assert_allclose(
            got, fn(torch.from_numpy(a), torch.from_numpy(b)).numpy(), rtol=1e-5, atol=1e-5
        )
        assert e.similarity(a[0], b).shape == (1, 5)
        np.testing.assert_allclose(e.similarity_pairwise(a, b[:3]), np.diag(got[:, :3]), rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError):
        e.similarity_fn_name = "jaccard"


# -- the tiny model with prompts (seconds)


@pytest.fixture(scope="module")
def tiny_prompted(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("tiny-prompted")
    src = _with_prompts(tiny_src, tmp / "src", prompts=TINY_PROMPTS, default_prompt_name="cls")
    return src, _export(src, tmp / "out", truncate_dims=[16, 8])


def test_prompts_recorded_and_resolved_like_sentence_transformers(tiny_prompted: tuple[Path, Path]) -> None:
    _, out = tiny_prompted
    e = Embedder.load(out)
    assert (
        e.prompts == TINY_PROMPTS and e.default_prompt_name == "cls" and e.manifest.truncate_dims == (16, 8)
    )
    # prompt="" switches the default prompt off: the reference is the prompt written out by hand
    raw = e.encode([TINY_PROMPTS["cls"] + t for t in QUERIES], prompt="")
    np.testing.assert_array_equal(e.encode(QUERIES), raw)  # the default prompt
    assert not np.allclose(e.encode(QUERIES, prompt=""), raw, atol=1e-3)
    np.testing.assert_array_equal(
        e.encode_query(QUERIES), e.encode([TINY_PROMPTS["query"] + t for t in QUERIES], prompt="")
    )
    np.testing.assert_array_equal(
        e.encode_document(QUERIES), e.encode(QUERIES, prompt=TINY_PROMPTS["document"])
    )
    # the routing is visible: the query and document prompts give different vectors
    assert np.abs(e.encode_query(QUERIES) - e.encode_document(QUERIES)).max() > 1e-2
    # prompt wins over prompt_name; an empty prompt switches the default off
    np.testing.assert_array_equal(
        e.encode(QUERIES, prompt="X ", prompt_name="query"), e.encode(QUERIES, prompt="X ")
    )
    e.default_prompt_name = None
    np.testing.assert_array_equal(e.encode(QUERIES, prompt=""), e.encode(QUERIES))
    with pytest.raises(InputError):
        e.default_prompt_name = "nope"


def test_tiny_prompted_matches_sentence_transformers(tiny_prompted: tuple[Path, Path]) -> None:
    st = pytest.importorskip("sentence_transformers")
    src, out = tiny_prompted
    ref = st.SentenceTransformer(str(src), device="cpu")
    ours = Embedder.load(out)
    assert ours.prompts == ref.prompts and ours.default_prompt_name == ref.default_prompt_name
    for call in ("encode", "encode_query", "encode_document"):
        a = getattr(ours, call)(QUERIES)
        b = getattr(ref, call)(QUERIES, normalize_embeddings=True)  # tiny has no Normalize module
        assert a.shape == b.shape and a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(a, b, atol=2e-5)
    one = ours.encode_query(QUERIES[0])
    assert one.shape == ref.encode_query(QUERIES[0]).shape == (ours.dim,)


def test_truncate_dim_on_listed_dims_only(tiny_prompted: tuple[Path, Path]) -> None:
    _, out = tiny_prompted
    e = Embedder.load(out, truncate_dim=16)
    full = Embedder.load(out).encode(DOCS)
    cut = e.encode(DOCS)
    assert cut.shape == (len(DOCS), 16) and e.get_sentence_embedding_dimension() == 16
    np.testing.assert_array_equal(cut, full[:, :16])  # cut after the graph's normalisation, not renormalised
    assert np.all(np.linalg.norm(cut, axis=1) < 0.9999)
    renormed = e.encode(DOCS, truncate_dim=8, normalize_embeddings=True)
    np.testing.assert_allclose(
        renormed, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), rtol=1e-6
    )
    assert e.encode(DOCS[0], truncate_dim=8).shape == (8,)
    with pytest.raises(InputError, match=r"\(16, 8\)"):
        e.encode(DOCS, truncate_dim=12)


def test_max_seq_length_can_be_lowered(tiny_prompted: tuple[Path, Path]) -> None:
    _, out = tiny_prompted
    e = Embedder.load(out)
    long = ["字" * 200]
    e.max_seq_length = 16
    assert e.max_seq_length == 16 and e.count_tokens(long) == [16]
    with pytest.raises(InputError):
        e.max_seq_length = e.manifest.max_length + 1


# -- the real MiniLM (sentence-transformers' own model files, with prompts added)


@pytest.fixture(scope="module")
def minilm_prompted(minilm_src: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("minilm-prompted")
    src = _with_prompts(minilm_src, tmp / "src")
    return src, _export(src, tmp / "out", truncate_dims=[256, 128])


@pytest.mark.slow
def test_minilm_matches_sentence_transformers(minilm_prompted: tuple[Path, Path]) -> None:
    st = pytest.importorskip("sentence_transformers")
    src, out = minilm_prompted
    ref = st.SentenceTransformer(str(src), device="cpu")
    ours = Embedder.load(out, variant="fp32")
    assert ours.get_sentence_embedding_dimension() == ref.get_embedding_dimension() == 384
    assert ours.max_seq_length == ref.max_seq_length == 256
    assert ours.similarity_fn_name == ref.similarity_fn_name == "cosine"
    cases = [
        ("encode_query", {}),
        ("encode_document", {}),
        ("encode", {}),
        ("encode", {"prompt_name": "cls"}),
        ("encode", {"prompt": "Represent this: "}),
        ("encode_query", {"prompt_name": "document"}),
        ("encode", {"truncate_dim": 128}),
        ("encode_query", {"truncate_dim": 256, "normalize_embeddings": True}),
    ]
    for call, kw in cases:
        a = getattr(ours, call)(DOCS, **kw)
        b = getattr(ref, call)(DOCS, **kw)
        assert a.shape == b.shape and a.dtype == b.dtype, (call, kw)
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f"{call} {kw}")
        np.testing.assert_allclose(ours.similarity(a, a), ref.similarity(b, b).numpy(), atol=1e-5)
    # prompts change the vectors: a query with and without its prompt differ measurably
    plain, prompted = ours.encode(QUERIES), ours.encode_query(QUERIES)
    assert float(np.min(np.sum(plain * prompted, axis=1))) < 0.99
    q, d = ours.encode_query(QUERIES), ours.encode_document(DOCS)
    np.testing.assert_allclose(
        ours.similarity(q, d),
        ref.similarity(ref.encode_query(QUERIES), ref.encode_document(DOCS)).numpy(),
        atol=1e-5,
    )
    assert list(ours.similarity(q, d).argmax(axis=1)) == [0, 1, 2]
