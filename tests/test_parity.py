"""One text → vector step: on a model exported with prompts, a default prompt and Matryoshka dims,
every surface (the OpenAI and TEI endpoints over real HTTP, encode, encode_query, embed-corpus,
LangChain, LlamaIndex, the OpenAI client, LangChain's OpenAIEmbeddings) gives the vector the same
text and options give through ``Embedder.encode``, and that vector is the independent expectation:
the prompt string put in front by the test, the cut and renormalisation done by numpy here."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from dmeta_embed import Embedder  # noqa: E402
from dmeta_embed.serve import ServerConfig, create_app  # noqa: E402
from tests.helpers import running  # noqa: E402

#: in the tiny model's synthetic vocab: English prompt words would all be [UNK], and two prompts
#: that tokenise alike could not show which one was applied
PROMPTS = {"query": "查询：", "document": "文档：", "cls": "分类主题："}
DEFAULT = "cls"
DIMS = [16, 8]
TEXTS = [
    "how do plants make food",
    "最好的火锅在哪里",
    "Paris is the capital and largest city of France.",
    "重庆的火锅很有名，麻辣鲜香。",
    "A short one.",
]
#: the same text through any path: batches differ only in padding, which fp32 leaves at rounding
ATOL = 1e-6


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def close(got: object, want: np.ndarray) -> None:
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= ATOL, np.abs(got - want).max()


@pytest.fixture(scope="module")
def prompted(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with prompts, a default prompt and Matryoshka dims, exported (fp32)."""
    from dmeta_embed.export import export_model

    tmp = tmp_path_factory.mktemp("parity")
    src = tmp / "src"
    shutil.copytree(tiny_src, src)
    cfg = src / "config_sentence_transformers.json"
    old = json.loads(cfg.read_text()) if cfg.is_file() else {}
    cfg.write_text(json.dumps({**old, "prompts": PROMPTS, "default_prompt_name": DEFAULT}))
    export_model(str(src), tmp / "out", variants=("fp32",), truncate_dims=DIMS)
    return tmp / "out"


@pytest.fixture(scope="module")
def emb(prompted: Path) -> Embedder:
    return Embedder.load(prompted, variant="fp32")


@pytest.fixture(scope="module")
def ref(emb: Embedder) -> dict[str, np.ndarray]:
    """The independent expectation: each prompt put in front by hand, no prompt resolution."""

    def raw(prompt: str) -> np.ndarray:
        return emb.encode([prompt + t for t in TEXTS], prompt="").astype(np.float64)

    return {name: raw(p) for name, p in PROMPTS.items()} | {"none": raw("")}


@pytest.fixture(scope="module")
def url(emb: Embedder) -> Iterator[str]:
    with running(create_app(emb, ServerConfig(max_wait_ms=2))) as base:
        with httpx.Client(base_url=base, timeout=30) as c:
            end = time.monotonic() + 60  # warm-up runs on the inference thread first
            while c.get("/ready").status_code != 200:
                assert time.monotonic() < end, "server not ready"
                time.sleep(0.02)
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as c:
        yield c


def test_the_prompts_change_the_vectors(ref: dict[str, np.ndarray]) -> None:
    """Otherwise the parity below could not tell a prompt that was skipped from one applied."""
    for a in ref:
        for b in ref:
            if a < b:
                assert np.abs(ref[a] - ref[b]).max() > 1e-2, (a, b)


def test_encode_and_encode_query(emb: Embedder, ref: dict[str, np.ndarray]) -> None:
    close(emb.encode(TEXTS), ref[DEFAULT])  # the default prompt
    close(emb.encode_query(TEXTS), ref["query"])
    close(emb.encode_document(TEXTS), ref["document"])
    close(emb.encode(TEXTS, truncate_dim=16, normalize_embeddings=True), unit(ref[DEFAULT][:, :16]))
    close(emb.encode(TEXTS, prompt_name="query", truncate_dim=8), ref["query"][:, :8])


def test_openai_endpoint_with_and_without_dimensions(
    client: httpx.Client, emb: Embedder, ref: dict[str, np.ndarray]
) -> None:
    r = client.post("/v1/embeddings", json={"input": TEXTS, "model": "m"})
    assert r.status_code == 200, r.text
    close([d["embedding"] for d in r.json()["data"]], ref[DEFAULT])
    for d in DIMS + [64]:
        r = client.post("/v1/embeddings", json={"input": TEXTS, "model": "m", "dimensions": d})
        assert r.status_code == 200, r.text
        # a normalised model's shorter vectors come back unit length, as OpenAI's do
        close([x["embedding"] for x in r.json()["data"]], unit(ref[DEFAULT][:, :d]))
    # usage counts the tokens the model was fed: the default prompt's included
    want = sum(len(ids) for ids in emb.tokenizer.encode([PROMPTS[DEFAULT] + t for t in TEXTS]).ids)
    assert r.json()["usage"]["prompt_tokens"] == want


def test_tei_embed_with_and_without_prompt_name(client: httpx.Client, ref: dict[str, np.ndarray]) -> None:
    r = client.post("/embed", json={"inputs": TEXTS})
    assert r.status_code == 200, r.text
    close(r.json(), ref[DEFAULT])
    for name in PROMPTS:
        r = client.post("/embed", json={"inputs": TEXTS, "prompt_name": name})
        assert r.status_code == 200, r.text
        close(r.json(), ref[name])
    r = client.post("/embed", json={"inputs": TEXTS, "prompt_name": "query", "dimensions": 8})
    assert r.status_code == 200, r.text
    close(r.json(), unit(ref["query"][:, :8]))  # TEI normalises by default, after the cut
    r = client.post("/embed", json={"inputs": TEXTS, "prompt_name": "nope"})
    assert r.status_code == 422 and "nope" in r.json()["error"] and "query" in r.json()["error"]


def test_embed_corpus(emb: Embedder, prompted: Path, ref: dict[str, np.ndarray], tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from dmeta_embed.corpus import embed_corpus

    pq.write_table(pa.table({"text": TEXTS}), tmp_path / "in.parquet")
    s = embed_corpus(tmp_path / "in.parquet", tmp_path / "out", prompted, variant="fp32", progress=False)
    table = pq.read_table(tmp_path / "out")
    close(np.stack(table["embedding"].to_numpy(zero_copy_only=False)), ref[DEFAULT])
    # n_tokens: what the model was fed, the default prompt's tokens included
    want = [len(emb.tokenizer.encode([PROMPTS[DEFAULT] + t]).ids[0]) for t in TEXTS]
    assert table["n_tokens"].to_pylist() == want and s["tokens"] == sum(want)


def test_langchain_routes_queries_and_documents(emb: Embedder, ref: dict[str, np.ndarray]) -> None:
    pytest.importorskip("langchain_core")
    from dmeta_embed.integrations.langchain import DmetaEmbeddings

    lc = DmetaEmbeddings(embedder=emb)
    close(lc.embed_documents(TEXTS), ref["document"])
    close([lc.embed_query(t) for t in TEXTS], ref["query"])


def test_llama_index_routes_queries_and_documents(emb: Embedder, ref: dict[str, np.ndarray]) -> None:
    pytest.importorskip("llama_index.core")
    from dmeta_embed.integrations.llama_index import DmetaEmbedding

    li = DmetaEmbedding(embedder=emb)
    close(li.get_text_embedding_batch(TEXTS), ref["document"])
    close([li.get_query_embedding(t) for t in TEXTS], ref["query"])


def test_openai_client_and_langchain_openai_embeddings(url: str, ref: dict[str, np.ndarray]) -> None:
    openai = pytest.importorskip("openai")
    oc = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    # the client's default: base64 on the wire, decoded by the client
    close([d.embedding for d in oc.embeddings.create(model="m", input=TEXTS).data], ref[DEFAULT])
    got = oc.embeddings.create(model="m", input=TEXTS, dimensions=16).data
    close([d.embedding for d in got], unit(ref[DEFAULT][:, :16]))
    lco = pytest.importorskip("langchain_openai")
    lc = lco.OpenAIEmbeddings(
        model="m", base_url=f"{url}/v1", api_key="unused", dimensions=8, check_embedding_ctx_length=False
    )
    close(lc.embed_documents(TEXTS), unit(ref[DEFAULT][:, :8]))
    close(lc.embed_query(TEXTS[0]), unit(ref[DEFAULT][:1, :8])[0])


# -- each new request option through the OpenAI client, TEI's documented bodies and LangChain ----


def test_prompt_name_through_the_openai_client_and_langchain(url: str, ref: dict[str, np.ndarray]) -> None:
    openai = pytest.importorskip("openai")
    oc = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    got = oc.embeddings.create(model="m", input=TEXTS, extra_body={"prompt_name": "query"}).data
    close([d.embedding for d in got], ref["query"])
    lco = pytest.importorskip("langchain_openai")
    lc = lco.OpenAIEmbeddings(
        model="m",
        base_url=f"{url}/v1",
        api_key="unused",
        check_embedding_ctx_length=False,
        model_kwargs={"extra_body": {"prompt_name": "document"}},  # how LangChain passes extra fields
    )
    close(lc.embed_documents(TEXTS), ref["document"])


def _quantized(ref: np.ndarray, emb: Embedder, precision: str) -> np.ndarray:
    """sentence-transformers' integers for these floats, ranges from the built-in calibration
    texts embedded the same way (the documented default)."""
    from dmeta_embed.texts import calibration_texts

    util = pytest.importorskip("sentence_transformers.util")
    calib = emb.encode(calibration_texts())
    return util.quantize_embeddings(ref.astype(np.float32), precision, calibration_embeddings=calib)  # type: ignore[no-any-return]


def close_ints(got: object, want: np.ndarray) -> None:
    """Integers from floats that may differ by rounding across batches: a value on a bucket edge
    may land one bucket over; none may be further, and nearly all are equal."""
    got = np.asarray(got)
    assert got.shape == want.shape
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.99, diff.max()


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_precision_through_every_client(
    url: str, client: httpx.Client, emb: Embedder, ref: dict[str, np.ndarray], precision: str
) -> None:
    want = _quantized(ref[DEFAULT], emb, precision)
    # TEI's body
    r = client.post("/embed", json={"inputs": TEXTS, "precision": precision})
    assert r.status_code == 200, r.text
    close_ints(r.json(), want)
    # OpenAI's body, float and base64
    r = client.post("/v1/embeddings", json={"input": TEXTS, "model": "m", "precision": precision})
    close_ints([d["embedding"] for d in r.json()["data"]], want)
    openai = pytest.importorskip("openai")
    oc = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    got = oc.embeddings.create(model="m", input=TEXTS, extra_body={"precision": precision}).data  # base64
    close_ints([d.embedding for d in got], want)
    lco = pytest.importorskip("langchain_openai")
    lc = lco.OpenAIEmbeddings(
        model="m",
        base_url=f"{url}/v1",
        api_key="unused",
        check_embedding_ctx_length=False,
        model_kwargs={"extra_body": {"precision": precision}},
    )
    close_ints(lc.embed_documents(TEXTS), want)
    # with a cut: the ranges follow the cut, renormalised vectors
    d = DIMS[0]
    r = client.post("/embed", json={"inputs": TEXTS, "precision": precision, "dimensions": d})
    cut = unit(ref[DEFAULT][:, :d])
    from dmeta_embed.texts import calibration_texts

    util = pytest.importorskip("sentence_transformers.util")
    calib = emb.encode(calibration_texts(), truncate_dim=d, normalize_embeddings=True)
    close_ints(
        r.json(), util.quantize_embeddings(cut.astype(np.float32), precision, calibration_embeddings=calib)
    )


def test_bad_options_are_named(client: httpx.Client) -> None:
    r = client.post("/embed", json={"inputs": "x", "precision": "int4"})
    assert r.status_code == 422 and "'precision' must be one of float32, int8" in r.json()["error"]
    r = client.post("/v1/embeddings", json={"input": "x", "dimensions": 12})
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "dimensions" and "16, 8" in err["message"]
    r = client.post("/v1/embeddings", json={"input": "x", "prompt_name": "nope"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt_name"
    info = client.get("/info").json()
    assert info["dimensions"] == [64, 16, 8] and info["prompts"] == sorted(PROMPTS)
    assert info["default_prompt_name"] == DEFAULT


def test_tokenize_as_tei_documents_it(client: httpx.Client, prompted: Path) -> None:
    """TEI's body and shape; ids and offsets checked against the tokenizers library directly."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(prompted / "tokenizer.json"))
    r = client.post("/tokenize", json={"inputs": TEXTS[1], "add_special_tokens": True})
    assert r.status_code == 200, r.text
    (row,) = r.json()
    text = PROMPTS[DEFAULT] + TEXTS[1]  # what the model sees: the default prompt first
    enc = tok.encode(text)
    assert [t["id"] for t in row] == enc.ids
    assert row[0] == {"id": enc.ids[0], "text": "[CLS]", "special": True, "start": None, "stop": None}
    for t, (a, b) in zip(row[1:-1], enc.offsets[1:-1], strict=True):
        assert (t["start"], t["stop"], t["text"], t["special"]) == (a, b, text[a:b], False)
    # no special tokens, a named prompt, a batch; counts are what /embed feeds (truncated at max length)
    r = client.post(
        "/tokenize",
        json={"inputs": [TEXTS[0], "长" * 3000], "add_special_tokens": False, "prompt_name": "query"},
    )
    rows = r.json()
    assert [t["id"] for t in rows[0]] == tok.encode(PROMPTS["query"] + TEXTS[0], add_special_tokens=False).ids
    assert len(rows[1]) == 1024 and not any(t["special"] for t in rows[0])
    r = client.post("/tokenize", json={"inputs": "x", "prompt_name": "nope"})
    assert r.status_code == 422 and "nope" in r.json()["error"]
