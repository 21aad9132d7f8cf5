"""LlamaIndex: :class:`DmetaEmbedding`, a ``BaseEmbedding`` over ``Embedder``, and
:class:`DmetaRerank`, a node postprocessor over a ``Reranker`` (local or a server's).

from llama_index.core import Settings
from dmeta_embed.integrations.llama_index import DmetaEmbedding, DmetaRerank
Settings.embed_model = DmetaEmbedding(model_path="out/dmeta", variant="int8")
engine = index.as_query_engine(node_postprocessors=[DmetaRerank(model_path="out/reranker", top_n=3)])
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from .._optional import require
from ..runtime import Embedder
from ._common import embedder_from
from ._rerank import Rank, RerankAdapter

_base = require("llama_index.core.base.embeddings.base")
_bridge = require("llama_index.core.bridge.pydantic")
_schema = require("llama_index.core.schema")
BaseEmbedding = _base.BaseEmbedding
BaseNodePostprocessor = require("llama_index.core.postprocessor.types").BaseNodePostprocessor

#: texts per call LlamaIndex hands us: the Embedder sorts each call's texts by length into its own
#: token-bounded batches, so a large call pads less; bounded so one call's vectors stay small
DEFAULT_EMBED_BATCH_SIZE = 512


class DmetaEmbedding(BaseEmbedding):  # type: ignore[misc,valid-type]
    """Nodes and queries embedded by one ``Embedder`` (``Embedder.load(model_path, **load_options)``).

    ``get_text_embedding_batch`` hands each ``embed_batch_size`` slice to one ``encode_document``
    call (the base class would embed one text at a time); queries use ``encode_query``, so the
    model's recorded prompts apply. The async methods run in a worker thread.
    """

    model_path: str = _bridge.Field(default="", description="The exported dmeta-embed folder.")
    _embedder: Embedder = _bridge.PrivateAttr()

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        embedder: Embedder | None = None,
        embed_batch_size: int = DEFAULT_EMBED_BATCH_SIZE,
        **options: Any,
    ) -> None:
        # BaseEmbedding's own fields (callback_manager, num_workers, ...) go to it, the rest to load
        base = {k: options.pop(k) for k in list(options) if k in BaseEmbedding.model_fields}
        emb = embedder_from(model_path, embedder, options)
        base.setdefault("model_name", str(emb.manifest.source.get("model", emb.path)))
        super().__init__(model_path=str(emb.path), embed_batch_size=embed_batch_size, **base)
        self._embedder = emb

    @classmethod
    def class_name(cls) -> str:
        return "DmetaEmbedding"

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embedder.encode_query([query])[0].tolist()  # type: ignore[no-any-return]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return self._embedder.encode_document(list(texts)).tolist()  # type: ignore[no-any-return]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.get_running_loop().run_in_executor(None, self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._aget_text_embeddings([text]))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.get_running_loop().run_in_executor(None, self._get_text_embeddings, texts)


class DmetaRerank(RerankAdapter, BaseNodePostprocessor):  # type: ignore[misc,valid-type]
    """Nodes rescored by a cross-encoder, best first, the ``top_n`` kept (as LlamaIndex's
    SentenceTransformerRerank does; the node's text as its embedding sees it, metadata included).
    Made from a folder, a loaded ``Reranker`` or a server's ``base_url``: ``_rerank.RerankAdapter``."""

    top_n: int | None = _bridge.Field(default=2, description="Nodes kept (None: all, reordered).")
    _rank: Rank = _bridge.PrivateAttr()

    @classmethod
    def class_name(cls) -> str:
        return "DmetaRerank"

    def _postprocess_nodes(self, nodes: list[Any], query_bundle: Any = None) -> list[Any]:
        if query_bundle is None:
            raise ValueError("DmetaRerank needs the query: pass query_str= or query_bundle=")
        if not nodes:
            return []
        texts = [n.node.get_content(metadata_mode=_schema.MetadataMode.EMBED) for n in nodes]
        ranked = self._rank(query_bundle.query_str, texts, self.top_n)
        return [_schema.NodeWithScore(node=nodes[i].node, score=score) for i, score in ranked]
