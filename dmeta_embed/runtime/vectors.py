"""Vector helpers shared by the runtime and the server. numpy only."""

from __future__ import annotations

import numpy as np


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 length, as a new array of the same dtype; an all-zero row stays zero
    (its norm is clamped to 1e-12 instead of dividing by zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.asarray(1e-12, dtype=norms.dtype))
