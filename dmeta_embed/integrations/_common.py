"""What every adapter does the same way: get its one ``Embedder`` from a folder or a caller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..runtime import Embedder


def embedder_from(
    model_path: str | Path | None, embedder: Embedder | None, load_options: dict[str, Any]
) -> Embedder:
    """``embedder``, or ``Embedder.load(model_path, **load_options)``; exactly one of the two."""
    if (model_path is None) == (embedder is None):
        raise TypeError("pass exactly one of model_path= (an exported folder) or embedder=")
    if embedder is not None:
        return embedder
    assert model_path is not None
    return Embedder.load(model_path, **load_options)
