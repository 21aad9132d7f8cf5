"""dmeta-embed: fast, validated ONNX sentence embeddings for Dmeta-embedding and BERT-style models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    DmetaEmbedError,
    ExportError,
    FidelityError,
    InputError,
    MissingDependencyError,
    ModelLoadError,
    ProviderError,
)
from .manifest import Manifest, Pooling, Precision, Provider

if TYPE_CHECKING:
    from .runtime import Embedder, Reranker

__all__ = [
    "Embedder",
    "Reranker",
    "Manifest",
    "Pooling",
    "Precision",
    "Provider",
    "DmetaEmbedError",
    "ExportError",
    "FidelityError",
    "InputError",
    "MissingDependencyError",
    "ModelLoadError",
    "ProviderError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Embedder pulls in onnxruntime: loaded on first use, so `import dmeta_embed` and the CLI's
    # --help stay light and a base install can still print its own "pip install" line
    if name == "Embedder":
        from .runtime import Embedder

        return Embedder
    if name == "Reranker":
        from .runtime import Reranker

        return Reranker
    raise AttributeError(f"module 'dmeta_embed' has no attribute {name!r}")
