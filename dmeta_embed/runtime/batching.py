"""Length-sorted batching under a padded-token budget, and per-batch padding."""

from __future__ import annotations

import numpy as np

from ..manifest import Provider

#: padded tokens per batch by provider, unless the caller sets it. CPU: small batches keep
#: activations in cache, faster on mixed lengths and no slower on queries (docs/performance.md)
DEFAULT_BATCH_TOKENS = {Provider.CPU: 1024, Provider.CUDA: 32768, Provider.OPENVINO: 1024}
#: texts per batch: 32 ran faster than 128 on mixed texts and on queries (docs/performance.md)
DEFAULT_BATCH_SIZE = 32


def plan_batches(
    lengths: np.ndarray, max_batch_tokens: int, batch_size: int, pad_ratio: float = 2.0
) -> list[np.ndarray]:
    """Split indices into batches of similar length.

    Longest first (the memory peak comes early, not after an hour), each batch at most
    ``batch_size`` texts and at most ``max_batch_tokens`` padded tokens (a single text longer
    than the budget still gets a batch of its own). A batch also ends where texts get shorter
    than its longest / ``pad_ratio``: a few dozen texts of unrelated lengths (a server's merged
    requests, a small encode call) are too few for sorting alone to keep batches even — one
    256-token text would pad 31 ten-token queries to 256 (what it gains: docs/performance.md,
    "Why the runtime's defaults are what they are").
    """
    order = np.argsort(-lengths, kind="stable")
    descending = -lengths[order]  # ascending, for searchsorted
    batches: list[np.ndarray] = []
    start, n = 0, len(order)
    while start < n:
        longest = int(lengths[order[start]])
        fit = max(1, min(batch_size, max_batch_tokens // max(longest, 1)))
        short = int(np.searchsorted(descending, -longest / pad_ratio, side="right"))
        end = min(start + fit, max(short, start + 1), n)
        batches.append(order[start:end])
        start = end
    return batches


def pad(
    ids: list[list[int]], index: np.ndarray, pad_id: int, type_ids: list[list[int]] | None = None
) -> tuple[np.ndarray, ...]:
    """Right-pad the selected sequences to their own longest length: (input_ids, attention_mask),
    and their token type ids third when ``type_ids`` is given (padding is type 0, as
    transformers pads them)."""
    rows = [ids[i] for i in index]
    width = max(len(r) for r in rows)
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for j, r in enumerate(rows):
        input_ids[j, : len(r)] = r
        mask[j, : len(r)] = 1
    if type_ids is None:
        return input_ids, mask
    types = np.zeros((len(rows), width), dtype=np.int64)
    for j, i in enumerate(index):
        types[j, : len(type_ids[i])] = type_ids[i]
    return input_ids, mask, types
