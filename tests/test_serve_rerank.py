"""The rerank routes over real HTTP on a tiny random-weight BERT cross-encoder: TEI's /rerank and
Cohere's and Jina's /v1/rerank, scores and order against sentence-transformers' CrossEncoder,
raw scores, top_n, returned texts, every refusal, the API key, a server of one reranker, a server
of both models, and both through the real ``dmeta-embed serve --rerank-model``."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from dmeta_embed.runtime import Embedder, Reranker  # noqa: E402
from dmeta_embed.serve import ServerConfig, create_app, load_reranker  # noqa: E402
from tests.helpers import free_port, running, serve_command  # noqa: E402

QUERY = "维生素C可以预防感冒吗"
DOCS = [
    "维生素C可以预防感冒吗",
    "今天天气很好",
    "如何更换花呗绑定银行卡",
    "a short English document about vitamins",
    "",
    "长文本" * 40,
    "维生素C",
]
#: activated scores within this of the reference (sigmoid outputs in [0, 1])
ATOL = 1e-4
LIMITS = ServerConfig(max_documents=8, max_chars=5000, max_body_bytes=200_000, max_wait_ms=5)


@pytest.fixture(scope="module")
def embedder(tiny_export: Path) -> Embedder:
    return Embedder.load(tiny_export, variant="fp32")


@pytest.fixture(scope="module")
def reranker(ce_export: Path) -> Reranker:
    return load_reranker(ce_export, LIMITS, variant="fp32")


@pytest.fixture(scope="module")
def cross_encoder(ce_sources: dict[str, Path]) -> Any:
    st = pytest.importorskip("sentence_transformers")
    return st.CrossEncoder(str(ce_sources["bert1"]), device="cpu")


def reference(ce: Any, query: str, docs: list[str], raw: bool = False) -> np.ndarray:
    """Each document's score in input order, by sentence-transformers' CrossEncoder (torch)."""
    import torch

    fn = torch.nn.Identity() if raw else None
    return np.asarray(ce.predict([(query, d) for d in docs], activation_fn=fn), dtype=np.float64)


def pair_tokens(ce: Any, query: str, docs: list[str]) -> int:
    """Tokens fed for the pairs, counted by the model's own transformers tokenizer."""
    ids = ce.tokenizer([query] * len(docs), docs, truncation=True, max_length=ce.max_length)["input_ids"]
    return sum(map(len, ids))


def best_first(scores: np.ndarray) -> list[int]:
    """CrossEncoder.rank's order: by score, descending, ties in input order."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def wait_ready(c: httpx.Client) -> None:
    end = time.monotonic() + 30
    while c.get("/ready").status_code != 200:
        assert time.monotonic() < end, "the server never became ready"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def client(embedder: Embedder, reranker: Any) -> Iterator[httpx.Client]:
    """One server hosting both models."""
    with (
        running(create_app(embedder, LIMITS, reranker=reranker)) as base,
        httpx.Client(base_url=base, timeout=30) as c,
    ):
        wait_ready(c)
        yield c


# -- answers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [False, True])
def test_tei_rerank_scores_and_order(client: httpx.Client, cross_encoder: Any, raw: bool) -> None:
    r = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": raw, "truncate": True})
    assert r.status_code == 200, r.text
    want = reference(cross_encoder, QUERY, DOCS, raw)
    body = r.json()
    assert [x["index"] for x in body] == best_first(want)
    assert all(set(x) == {"index", "score"} for x in body)  # no text unless asked
    got = np.array([x["score"] for x in sorted(body, key=lambda x: x["index"])])
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    if not raw:
        assert ((got >= 0) & (got <= 1)).all()


def test_tei_rerank_return_text(client: httpx.Client) -> None:
    body = client.post(
        "/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True, "truncate": True}
    ).json()
    assert {x["index"]: x["text"] for x in body} == dict(enumerate(DOCS))


@pytest.mark.parametrize("as_objects", [False, True])
def test_cohere_rerank_shape_top_n_documents_usage(
    client: httpx.Client, cross_encoder: Any, as_objects: bool
) -> None:
    docs: list[Any] = [{"text": d} for d in DOCS] if as_objects else DOCS
    r = client.post(
        "/v1/rerank",
        json={"model": "anything", "query": QUERY, "documents": docs, "top_n": 3, "return_documents": True},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    want = reference(cross_encoder, QUERY, DOCS)
    assert [x["index"] for x in body["results"]] == best_first(want)[:3]
    for x in body["results"]:
        assert set(x) == {"index", "relevance_score", "document"}
        assert x["document"] == {"text": DOCS[x["index"]]}
        assert abs(x["relevance_score"] - want[x["index"]]) <= ATOL
    tokens = pair_tokens(cross_encoder, QUERY, DOCS)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert body["model"] == "reranker" and isinstance(body["id"], str)  # the folder's name, never a path


def test_cohere_rerank_defaults(client: httpx.Client, cross_encoder: Any) -> None:
    """No top_n: every document; no return_documents: no document field."""
    body = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).json()
    assert [x["index"] for x in body["results"]] == best_first(reference(cross_encoder, QUERY, DOCS))
    assert all(set(x) == {"index", "relevance_score"} for x in body["results"])
    top = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 100}).json()
    assert len(top["results"]) == len(DOCS)


def test_concurrent_rerank_requests_get_their_own_scores(client: httpx.Client, cross_encoder: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(DOCS[i % len(DOCS)], DOCS[: 1 + i % len(DOCS)]) for i in range(24)]

    def one(job: tuple[str, list[str]]) -> tuple[list[int], list[int]]:
        q, docs = job
        got = client.post("/rerank", json={"query": q, "texts": docs, "truncate": True}).json()
        return [x["index"] for x in got], best_first(reference(cross_encoder, q, docs))

    with ThreadPoolExecutor(8) as pool:
        for got, want in pool.map(one, jobs):
            assert got == want


# -- refusals ------------------------------------------------------------------------------------------

LONG = "维" * 300  # past the tiny cross-encoder's max_length (128 tokens: one a character)
#: (path, body, status, OpenAI-shaped error.param, error.code); TEI's body: error + error_type only
BAD = [
    ("/v1/rerank", {"query": QUERY, "documents": []}, 400, "documents", None),
    ("/rerank", {"query": QUERY, "texts": []}, 422, None, None),
    ("/v1/rerank", {"query": QUERY}, 400, "documents", None),
    ("/v1/rerank", {"documents": ["a"]}, 400, "query", None),
    ("/rerank", {"query": 3, "texts": ["a"]}, 422, None, None),
    ("/v1/rerank", {"query": QUERY, "documents": ["a"] * 9}, 413, "documents", "max_documents"),
    ("/rerank", {"query": QUERY, "texts": ["a"] * 9}, 413, None, None),
    ("/v1/rerank", {"query": QUERY, "documents": ["a", 7]}, 400, "documents[1]", None),
    ("/v1/rerank", {"query": QUERY, "documents": ["a", {"txt": "b"}]}, 400, "documents[1]", None),
    ("/rerank", {"query": QUERY, "texts": ["a", None]}, 422, None, None),
    ("/v1/rerank", {"query": QUERY, "documents": ["a", "x" * 5001]}, 413, "documents[1]", "max_chars"),
    ("/v1/rerank", {"query": QUERY, "documents": ["a"], "top_n": 0}, 400, "top_n", None),
    (
        "/v1/rerank",
        {"query": QUERY, "documents": ["a", LONG], "truncate": False},
        413,
        "documents[1]",
        "max_length",
    ),
    ("/rerank", {"query": QUERY, "texts": ["a", LONG]}, 413, None, None),  # TEI: truncate defaults to false
    ("/rerank", {"query": QUERY, "texts": ["a"], "truncation_direction": "left"}, 422, None, None),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "code"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)]
)
def test_bad_rerank_requests(
    client: httpx.Client, path: str, body: object, status: int, param: str | None, code: str | None
) -> None:
    r = client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()
    if path == "/rerank":
        assert set(err) == {"error", "error_type"} and err["error_type"] == "Validation"
    else:
        assert (err["error"]["param"], err["error"]["code"]) == (param, code), r.text
        if param is not None and "[" in param:
            assert f"'{param}'" in err["error"]["message"]  # the message names the index too


def test_long_documents_are_truncated_by_default_on_v1(client: httpx.Client, cross_encoder: Any) -> None:
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": ["a", LONG]})
    assert r.status_code == 200, r.text
    want = reference(cross_encoder, QUERY, ["a", LONG])
    assert [x["index"] for x in r.json()["results"]] == best_first(want)


def test_api_key_guards_rerank_routes(embedder: Embedder, reranker: Any) -> None:
    with running(create_app(None, ServerConfig(api_key="s3cret"), reranker=reranker)) as base:
        body = {"query": QUERY, "documents": DOCS}
        assert httpx.post(f"{base}/v1/rerank", json=body).status_code == 401
        assert httpx.post(f"{base}/rerank", json={"query": QUERY, "texts": DOCS}).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.post(f"{base}/v1/rerank", json=body, headers=wrong).status_code == 401
        ok = httpx.post(
            f"{base}/v1/rerank", json=body, headers={"Authorization": "Bearer s3cret"}, timeout=30
        )
        assert ok.status_code == 200, ok.text


# -- which models a server hosts ---------------------------------------------------------------------


def test_reranker_alone_refuses_embedding_routes(reranker: Any) -> None:
    with (
        running(create_app(None, LIMITS, reranker=reranker)) as base,
        httpx.Client(base_url=base, timeout=30) as c,
    ):
        wait_ready(c)
        r = c.post("/v1/embeddings", json={"input": "x"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert "no embedding model is loaded" in r.json()["error"]["message"]
        r = c.post("/embed", json={"inputs": "x"})
        assert r.status_code == 424 and "no embedding model" in r.json()["error"]
        assert c.post("/tokenize", json={"inputs": "x"}).status_code == 424
        assert c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200
        models = c.get("/v1/models").json()["data"]
        assert [(m["id"], m["task"]) for m in models] == [("reranker", "rerank")]
        info = c.get("/info").json()
        assert "dim" not in info and info["reranker"]["num_labels"] == 1


def test_embedder_alone_refuses_rerank_routes(embedder: Embedder) -> None:
    with running(create_app(embedder, LIMITS)) as base, httpx.Client(base_url=base, timeout=30) as c:
        wait_ready(c)
        r = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        assert r.status_code == 404 and "no reranking model is loaded" in r.json()["error"]["message"]
        assert c.post("/rerank", json={"query": QUERY, "texts": DOCS}).status_code == 424
        assert "reranker" not in c.get("/info").json()


def test_mixed_server_answers_both_with_its_own_metrics(
    client: httpx.Client, embedder: Embedder, reranker: Any
) -> None:
    def metric(name: str) -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    names = [
        "dmeta_embed_inputs_embedded_total",
        "dmeta_embed_rerank_pairs_scored_total",
        "dmeta_embed_rerank_batch_size_count",
    ]
    before = [metric(n) for n in names]
    r = client.post("/v1/embeddings", json={"input": DOCS[:3]})
    assert r.status_code == 200
    got = np.array([d["embedding"] for d in r.json()["data"]])
    np.testing.assert_allclose(got, embedder.encode(DOCS[:3]), atol=1e-5)
    assert client.post("/rerank", json={"query": QUERY, "texts": DOCS[:4]}).status_code == 200
    assert [metric(n) - b for n, b in zip(names, before, strict=True)] == [3, 4, 1]
    assert metric("dmeta_embed_rerank_ready") == 1 and metric("dmeta_embed_ready") == 1
    models = client.get("/v1/models").json()["data"]
    assert sorted(m["task"] for m in models) == ["embed", "rerank"]
    info = client.get("/info").json()
    assert info["dim"] == embedder.dim and info["limits"]["max_documents"] == 8
    assert (
        info["plan"]["variant"] == "fp32"
        and info["reranker"]["plan"]["variant"] == reranker.plan.variant.value
    )
    assert "folder" not in info["plan"]  # no local path


def _start(cmd: list[str], base: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    end = time.monotonic() + 90
    while True:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < end, "server did not become ready"
        try:
            if httpx.get(f"{base}/ready").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    return proc.stdout.read() if proc.stdout else ""


def test_cli_serves_embedder_and_reranker(
    tiny_export: Path, ce_export: Path, embedder: Embedder, cross_encoder: Any
) -> None:
    """``dmeta-embed serve --model EMB --rerank-model RR``: both shapes against CrossEncoder, the
    embeddings against encode; then ``--model RR`` alone serves only the rerank routes."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = serve_command(
        tiny_export,
        port,
        "fp32",
        "--rerank-model",
        str(ce_export),
        "--rerank-model-name",
        "my-rr",
        "--no-spin",
    )
    proc = _start(cmd, base)
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            want = reference(cross_encoder, QUERY, DOCS)
            body = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 5}).json()
            assert body["model"] == "my-rr"
            assert [x["index"] for x in body["results"]] == best_first(want)[:5]
            got = np.array([x["relevance_score"] for x in body["results"]])
            np.testing.assert_allclose(got, want[best_first(want)[:5]], atol=ATOL, rtol=0)
            ranks = c.post("/rerank", json={"query": QUERY, "texts": DOCS, "truncate": True}).json()
            assert [x["index"] for x in ranks] == best_first(want)
            r = c.post("/v1/embeddings", json={"input": DOCS[:2]})
            vectors = np.array([d["embedding"] for d in r.json()["data"]])
            np.testing.assert_allclose(vectors, embedder.encode(DOCS[:2]), atol=1e-5)
            assert sorted(m["id"] for m in c.get("/v1/models").json()["data"]) == ["model", "my-rr"]
    finally:
        out = _stop(proc) if proc.poll() is None else ""
    assert "serving rerank 'my-rr'" in out and "Traceback" not in out, out

    proc = _start(serve_command(ce_export, port, "fp32", "--no-spin"), base)
    try:
        assert httpx.post(f"{base}/v1/embeddings", json={"input": "x"}).status_code == 404
        r = httpx.post(f"{base}/rerank", json={"query": QUERY, "texts": DOCS[:3]}, timeout=60)
        assert [x["index"] for x in r.json()] == best_first(reference(cross_encoder, QUERY, DOCS[:3]))
    finally:
        if proc.poll() is None:
            _stop(proc)


def test_only_one_label_rerankers_and_tasks_in_their_place(tiny_export: Path, ce_export: Path) -> None:
    """A many-label model is refused at start (ranking needs one score); --rerank-model must be a
    reranker and --model beside it an embedder, checked before anything loads."""
    from types import SimpleNamespace

    from dmeta_embed.errors import ModelLoadError
    from dmeta_embed.serve import _load_models
    from dmeta_embed.serve.rerank import check_reranker

    with pytest.raises(ModelLoadError, match="3 labels"):
        check_reranker(SimpleNamespace(num_labels=3, plan=SimpleNamespace(folder=ce_export)))  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError, match="--rerank-model is an embedding model"):
        _load_models(tiny_export, tiny_export, LIMITS, "fp32", "auto", None)
    with pytest.raises(ModelLoadError, match="--model is a reranker"):
        _load_models(ce_export, ce_export, LIMITS, "fp32", "auto", None)
