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
