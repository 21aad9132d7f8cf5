"""Runtime: exported folder → embeddings, with only numpy, tokenizers and onnxruntime."""

from .embedder import Embedder

__all__ = ["Embedder"]
