"""LangChain: :class:`DmetaEmbeddings`, a ``langchain_core.embeddings.Embeddings`` over ``Embedder``,
and :class:`DmetaRerank`, a document compressor over a ``Reranker`` (local or a server's).

from dmeta_embed.integrations.langchain import DmetaEmbeddings, DmetaRerank
emb = DmetaEmbeddings(model_path="out/dmeta", variant="int8")
vectors = emb.embed_documents(["第一段", "第二段"])
rerank = DmetaRerank(model_path="out/reranker", top_n=3)   # or base_url="http://host:8080"
best = rerank.compress_documents(docs, "query")
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._optional import require
from ..runtime import Embedder
from ._common import embedder_from
from ._rerank import Rank, RerankAdapter

Embeddings = require("langchain_core.embeddings").Embeddings
BaseDocumentCompressor = require("langchain_core.documents.compressor").BaseDocumentCompressor
Document = require("langchain_core.documents").Document
_pydantic = require("pydantic", extra="langchain")  # langchain-core is built on it


class DmetaEmbeddings(Embeddings):  # type: ignore[misc,valid-type]
    """Documents and queries embedded by one ``Embedder`` (``Embedder.load(model_path, **load_options)``).

    Queries get the model's "query" prompt and documents its "document"/"passage" prompt when the
    export recorded them (``encode_query`` / ``encode_document``). The async methods run the
    encode in a worker thread (onnxruntime releases the GIL), so the event loop keeps running.
    """

    def __init__(
        self, model_path: str | Path | None = None, *, embedder: Embedder | None = None, **load_options: Any
    ) -> None:
        self.embedder = embedder_from(model_path, embedder, load_options)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return self.embedder.encode_document(list(texts)).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.encode_query([text])[0].tolist()  # type: ignore[no-any-return]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.get_running_loop().run_in_executor(None, self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.get_running_loop().run_in_executor(None, self.embed_query, text)

    def __repr__(self) -> str:
        return f"DmetaEmbeddings({self.embedder!r})"


class DmetaRerank(RerankAdapter, BaseDocumentCompressor):  # type: ignore[misc,valid-type]
    """Documents reordered by a cross-encoder, best first, the ``top_n`` kept, each with its
    ``relevance_score`` in ``metadata`` (as LangChain's CohereRerank answers). Made from a folder,
    a loaded ``Reranker`` or a server's ``base_url``: ``_rerank.RerankAdapter``."""

    model_config = _pydantic.ConfigDict(arbitrary_types_allowed=True)
    #: documents kept (None: all, reordered)
    top_n: int | None = 3
    _rank: Rank = _pydantic.PrivateAttr()

    def compress_documents(
        self, documents: Sequence[Any], query: str, callbacks: Any = None
    ) -> Sequence[Any]:
        if not documents:
            return []
        ranked = self._rank(query, [d.page_content for d in documents], self.top_n)
        out = []
        for index, score in ranked:
            doc = documents[index]
            out.append(
                Document(
                    page_content=doc.page_content,
                    metadata={**doc.metadata, "relevance_score": score},
                    id=doc.id,
                )
            )
        return out
