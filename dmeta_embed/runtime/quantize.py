"""Quantized output vectors, as sentence-transformers' ``quantize_embeddings`` computes them.

``int8``/``uint8``: each dimension's calibration range ``[min, max]`` is cut into 256 buckets
(``floor((x - min) / step)``, clipped to 0..255; int8 subtracts 128). ``binary``/``ubinary``:
one bit per dimension (``x > 0``), packed eight to a byte, big-endian within the byte
(``numpy.packbits``); ``binary`` subtracts 128 and stores int8. The arithmetic is
sentence-transformers 5.x's, step for step, so the same floats and ranges give the same integers.

Where the ranges come from differs on purpose: sentence-transformers' ``encode(precision=...)``
takes them from the batch being encoded, so a text's integers change with its neighbours; here
they come from a fixed calibration set (``Embedder.calibration_ranges``), so the same text gives
the same integers alone or in any batch, in ``encode`` and in the server. numpy only.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

#: sentence-transformers' names; ``float32`` is no quantization
PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
#: the precisions that need per-dimension calibration ranges
RANGED = ("int8", "uint8")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else an InputError listing them."""
    if precision not in PRECISIONS:
        reason = f"must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        raise InputError(f"precision {reason}", field="precision", reason=reason)
    return precision


def ranges_of(calibration: np.ndarray) -> np.ndarray:
    """Per-dimension ``[min, max]`` of calibration vectors: float32 ``(2, dim)``."""
    return np.vstack((calibration.min(axis=0), calibration.max(axis=0))).astype(np.float32)


def quantize(vectors: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """``vectors`` (float ``(n, dim)``) in ``precision``: float32 unchanged; int8/uint8 ``(n, dim)``
    with ``ranges`` (``(2, dim)``, required); binary (int8) / ubinary (uint8) ``(n, ceil(dim / 8))``."""
    check_precision(precision)
    if precision == "float32":
        return vectors
    if precision in RANGED:
        if ranges is None:
            raise InputError(f"precision={precision!r} needs calibration ranges (2, dim)", field="ranges")
        ranges = np.asarray(ranges)
        if ranges.shape != (2, vectors.shape[-1]):
            raise InputError(
                f"ranges has shape {ranges.shape}; expected (2, {vectors.shape[-1]})", field="ranges"
            )
        starts = ranges[0, :]
        steps = (ranges[1, :] - ranges[0, :]) / 255
        steps = np.where(steps == 0, 1, steps)  # a constant dimension: every value in bucket 0
        buckets = np.clip(np.floor((vectors - starts) / steps), 0, 255)
        if precision == "uint8":
            return buckets.astype(np.uint8)
        return (buckets - 128).astype(np.int8)
    bits = np.packbits(vectors > 0, axis=-1).reshape(vectors.shape[0], -1)
    if precision == "ubinary":
        return bits
    return (bits - 128).astype(np.int8)
