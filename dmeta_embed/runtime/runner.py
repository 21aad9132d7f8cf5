"""The one call every inference engine answers: padded token ids in, pooled vectors out.

onnxruntime (:class:`~dmeta_embed.runtime.session.OnnxRuntimeRunner`) and OpenVINO
(:class:`~dmeta_embed.runtime.openvino.OpenVINORunner`) implement it; the runtime's text → vector
step (:mod:`dmeta_embed.runtime.pipeline`) needs nothing else from an engine. numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import ProviderError
from ..manifest import Provider


@runtime_checkable
class Runner(Protocol):
    """An embedding graph loaded on one engine: ``(input_ids, attention_mask)`` int64 ``[B, T]``
    → float32 ``[B, dim]``, pooled (and normalised) as the manifest says. Safe to call from
    several threads (an engine that cannot run two calls at once serialises them itself)."""

    @property
    def provider(self) -> Provider:
        """Where the graph runs."""
        ...

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The pooled vectors of one padded batch, one row per sequence."""
        ...

    def run_many(
        self, batches: Iterable[tuple[np.ndarray, np.ndarray]], count: int | None = None
    ) -> list[np.ndarray]:
        """Each ``(input_ids, attention_mask)`` batch's vectors, in order: the same vectors
        :meth:`run` gives each batch, however many the engine runs at once. ``batches`` may be a
        generator (padded as it is read); ``count``: how many it holds, when known."""
        ...


def feed_names(graph_inputs: list[str], inputs: tuple[str, ...]) -> tuple[str, str]:
    """The (input_ids, attention_mask) names the manifest gives, checked against the graph's."""
    if sorted(graph_inputs) != sorted(inputs) or len(inputs) != 2:
        raise ProviderError(f"the graph's inputs are {graph_inputs}, the manifest says {list(inputs)}")
    return inputs[0], inputs[1]
