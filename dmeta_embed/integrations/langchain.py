"""LangChain: :class:`DmetaEmbeddings`, a ``langchain_core.embeddings.Embeddings`` over ``Embedder``.

from dmeta_embed.integrations.langchain import DmetaEmbeddings
emb = DmetaEmbeddings(model_path="out/dmeta", variant="int8")
vectors = emb.embed_documents(["第一段", "第二段"])
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from .._optional import require
from ..runtime import Embedder
from ._common import embedder_from

Embeddings = require("langchain_core.embeddings").Embeddings


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
