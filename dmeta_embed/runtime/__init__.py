"""Runtime: exported folder → embeddings, with only numpy, tokenizers and an engine (onnxruntime
or OpenVINO). ``Embedder`` is imported on first use, so ``runtime.cpu`` and ``runtime.choice``
(standard library only) import without any engine installed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .embedder import Embedder
    from .reranker import Reranker

__all__ = ["Embedder", "Reranker"]


def __getattr__(name: str) -> Any:
    if name == "Embedder":
        from .embedder import Embedder

        return Embedder
    if name == "Reranker":
        from .reranker import Reranker

        return Reranker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
