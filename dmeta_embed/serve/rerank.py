"""The rerank routes: TEI's ``POST /rerank`` and Cohere's and Jina's ``POST /v1/rerank``.

Both score (query, document) pairs with the hosted ``Reranker``: its pipeline tokenises the pairs
(on the event loop, or on a thread for large requests), the reranker's own batcher runs them with
other requests' pairs, and ``Reranker.activate`` turns the logits into scores, so a score is what
``Reranker.rank`` gives for the same pair. Answers are best first, ties in input order (as
sentence-transformers' ``CrossEncoder.rank`` sorts).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from ..errors import ModelLoadError
from ..runtime.tokenize import Tokenized
from .config import ServerConfig
from .errors import Kind, RequestError
from .schemas import _bool, _int, _object, _right_only, _str, json_type

if TYPE_CHECKING:
    from ..runtime.reranker import Reranker
    from .app import Service

#: requests with at most this many characters (query repeated per document) are tokenised on the
#: event loop; larger ones on a thread (as ``serve.app`` does for embeddings)
INLINE_TOKENIZE_CHARS = 4096


@dataclass(frozen=True)
class RerankRequest:
    """What either rerank route asks for."""

    query: str
    documents: list[str]
    #: the best ``top_n`` only (None: every document)
    top_n: int | None = None
    #: answer each document's text too (TEI ``return_text``, Cohere/Jina ``return_documents``)
    return_documents: bool = False
    #: logits instead of the manifest's activation (TEI ``raw_scores``)
    raw_scores: bool = False
    #: False: refuse a pair longer than max_length tokens instead of cutting it
    truncate: bool = True


def check_reranker(reranker: Reranker) -> None:
    """A reranker the rank routes can serve: one score per pair (TEI refuses the same)."""
    if reranker.num_labels != 1:
        raise ModelLoadError(
            f"{reranker.plan.folder}: the model has {reranker.num_labels} labels; /rerank and "
            "/v1/rerank rank by one score per pair (num_labels=1)"
        )


def _query(body: dict[str, Any], cfg: ServerConfig) -> str:
    query = body.get("query")
    if not isinstance(query, str):
        got = "missing" if query is None else f"{json_type(query)}, expected a string"
        raise RequestError(f"'query' is {got}", field="query")
    if len(query) > cfg.max_chars:
        raise RequestError(
            f"'query' has {len(query)} characters; the limit is max_chars={cfg.max_chars}",
            Kind.MAX_CHARS,
            field="query",
        )
    return query


def _documents(value: object, name: str, cfg: ServerConfig, *, objects: bool) -> list[str]:
    """A non-empty list of strings (``objects``: or of ``{"text": str}``, Cohere's and Jina's
    other form) within the server's limits, else a refusal naming the item."""
    if not isinstance(value, list) or not value:
        got = "missing" if value is None else ("an empty array" if value == [] else json_type(value))
        raise RequestError(f"'{name}' is {got}; send a non-empty array of strings", field=name)
    if len(value) > cfg.max_documents:
        raise RequestError(
            f"'{name}' has {len(value)} documents; the limit is max_documents={cfg.max_documents} per request",
            Kind.MAX_DOCUMENTS,
            field=name,
        )
    out = []
    for i, d in enumerate(value):
        if objects and isinstance(d, dict) and isinstance(d.get("text"), str):
            d = d["text"]
        if not isinstance(d, str):
            shape = "a string or an object with a string 'text'" if objects else "a string"
            raise RequestError(f"'{name}[{i}]' is {json_type(d)}, expected {shape}", field=name, index=i)
        if len(d) > cfg.max_chars:
            raise RequestError(
                f"'{name}[{i}]' has {len(d)} characters; the limit is max_chars={cfg.max_chars}",
                Kind.MAX_CHARS,
                field=name,
                index=i,
            )
        out.append(d)
    return out


def parse_tei_rerank(body: object, cfg: ServerConfig) -> RerankRequest:
    """``POST /rerank`` as text-embeddings-inference takes it: query, texts, raw_scores,
    return_text, truncate (default false, as TEI's), truncation_direction (right only)."""
    body = _object(body)
    _right_only(body)
    return RerankRequest(
        query=_query(body, cfg),
        documents=_documents(body.get("texts"), "texts", cfg, objects=False),
        return_documents=_bool(body, "return_text", False),
        raw_scores=_bool(body, "raw_scores", False),
        truncate=_bool(body, "truncate", False),
    )


def parse_cohere_rerank(body: object, cfg: ServerConfig) -> RerankRequest:
    """``POST /v1/rerank`` as Cohere and Jina take it: model (checked, ignored), query, documents
    (strings or ``{"text": ...}``), top_n, return_documents (default false, as Cohere's); plus
    ``truncate`` (default true: both services cut long documents)."""
    body = _object(body)
    _str(body, "model")
    return RerankRequest(
        query=_query(body, cfg),
        documents=_documents(body.get("documents"), "documents", cfg, objects=True),
        top_n=_int(body, "top_n"),
        return_documents=_bool(body, "return_documents", False),
        truncate=_bool(body, "truncate", True),
    )


async def _scores(svc: Service, request: Request, req: RerankRequest) -> tuple[np.ndarray, np.ndarray, int]:
    """The documents' scores (input order), their order best first (cut at ``top_n``), and the
    tokens fed."""
    served = svc.models.reranker()
    reranker = served.model
    pairs = [(req.query, d) for d in req.documents]

    def prepare() -> Tokenized:
        return reranker.pipeline.prepare(pairs, truncate=req.truncate)  # type: ignore[no-any-return]

    if len(req.query) * len(pairs) + sum(map(len, req.documents)) <= INLINE_TOKENIZE_CHARS:
        tok = prepare()
    else:
        tok = await asyncio.get_running_loop().run_in_executor(None, prepare)
    logits = await svc.infer(request, served, tok)
    scores = np.asarray(reranker.activate(logits, "identity" if req.raw_scores else None), dtype=np.float32)
    scores = scores.reshape(len(pairs))
    order = np.argsort(-scores, kind="stable")[: req.top_n]  # stable: ties keep input order
    return scores, order, int(tok.lengths.sum())


def rerank_routes(svc: Service) -> list[tuple[str, str, Callable[[Request], Awaitable[Response]]]]:
    """(path, metrics name, handler) of each rerank route, for ``create_app``."""

    async def tei(request: Request) -> Response:
        svc.models.reranker()  # a server without one says so before reading the body
        req = parse_tei_rerank(await svc.read_json(request), svc.cfg)
        scores, order, _ = await _scores(svc, request, req)
        ranks: list[dict[str, Any]] = [{"index": int(i), "score": float(scores[i])} for i in order]
        if req.return_documents:
            for r in ranks:
                r["text"] = req.documents[r["index"]]
        return await svc.big_json(ranks, 0)

    async def cohere(request: Request) -> Response:
        served = svc.models.reranker()
        req = parse_cohere_rerank(await svc.read_json(request), svc.cfg)
        scores, order, tokens = await _scores(svc, request, req)
        results: list[dict[str, Any]] = [
            {"index": int(i), "relevance_score": float(scores[i])} for i in order
        ]
        if req.return_documents:
            for r in results:
                r["document"] = {"text": req.documents[r["index"]]}
        body = {
            "id": str(uuid.uuid4()),
            "model": served.name,
            "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return await svc.big_json(body, 0)

    return [("/rerank", "tei_rerank", tei), ("/v1/rerank", "rerank", cohere)]
