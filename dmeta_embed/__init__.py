"""dmeta-embed: fast, validated ONNX sentence embeddings for Dmeta-embedding and BERT-style models."""

__version__ = "0.1.0"

from .errors import (
                     DmetaEmbedError,
                     ExportError,
                     FidelityError,
                     InputError,
                     MissingDependencyError,
                     ModelLoadError,
                     ProviderError,
)
from .manifest import Manifest, Pooling, Precision
from .runtime import Embedder

__all__ = ["Embedder", "Manifest", "Pooling", "Precision", "DmetaEmbedError", "ExportError",
           "FidelityError", "InputError", "MissingDependencyError", "ModelLoadError", "ProviderError",
           "__version__"]
