"""The one L2 normalisation (runtime.pipeline.finish and Embedder.similarity use it; that encode,
the server and the adapters return the same vectors is tests/test_parity.py's)."""

from __future__ import annotations

import numpy as np

from dmeta_embed.runtime.vectors import normalize


def test_rows_get_unit_length_and_keep_their_dtype() -> None:
    x = np.array([[3, 4], [0.5, 0], [-1, -1]], dtype=np.float32)
    y = normalize(x)
    assert y.dtype == np.float32 and y.shape == (3, 2)
    np.testing.assert_allclose(y, [[0.6, 0.8], [1, 0], [-0.70710677, -0.70710677]], atol=1e-7)
    np.testing.assert_allclose(x[0], [3, 4])  # a new array: the input is untouched


def test_zero_rows_stay_zero() -> None:
    y = normalize(np.zeros((2, 4), dtype=np.float32))
    assert not np.isnan(y).any() and (y == 0).all()


def test_one_vector() -> None:
    np.testing.assert_allclose(normalize(np.array([0, 2, 0], dtype=np.float64)), [0, 1, 0])
