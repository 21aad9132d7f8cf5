"""The one call every inference engine answers: padded token ids in, pooled vectors (an embed
folder) or logits (a rerank folder) out.

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
    """A graph loaded on one engine: ``(input_ids, attention_mask[, token_type_ids])`` int64
    ``[B, T]`` → float32 ``[B, dim]``, pooled (and normalised) as the manifest says, or a rerank
    graph's ``[B, num_labels]`` logits. Token type ids are fed only to a graph that takes them
    (a BERT cross-encoder: the document is segment 1). Safe to call from several threads (an
    engine that cannot run two calls at once serialises them itself)."""

    @property
    def provider(self) -> Provider:
        """Where the graph runs."""
        ...

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        """The pooled vectors (or logits) of one padded batch, one row per sequence."""
        ...

    def run_many(self, batches: Iterable[Feed], count: int | None = None) -> list[np.ndarray]:
        """Each ``(input_ids, attention_mask[, token_type_ids])`` batch's vectors, in order: the same vectors
        :meth:`run` gives each batch, however many the engine runs at once. ``batches`` may be a
        generator (padded as it is read); ``count``: how many it holds, when known."""
        ...


#: one padded batch: ``(input_ids, attention_mask)``, or with ``token_type_ids`` third
Feed = tuple[np.ndarray, ...]


#: every input a graph may take, in feeding order
FEED_ORDER = ("input_ids", "attention_mask", "token_type_ids")


def feed_names(graph_inputs: list[str], inputs: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The (input_ids, attention_mask[, token_type_ids]) names the manifest gives, in that order,
    checked against the graph's (None: the graph's own, in :data:`FEED_ORDER`: the export's
    candidates, which have no manifest yet)."""
    if inputs is None:
        inputs = tuple(n for n in FEED_ORDER if n in graph_inputs)
    if sorted(graph_inputs) != sorted(inputs) or len(inputs) not in (2, 3):
        raise ProviderError(f"the graph's inputs are {graph_inputs}, the manifest says {list(inputs)}")
    return inputs


def feed(names: tuple[str, ...], arrays: tuple[np.ndarray | None, ...]) -> dict[str, np.ndarray]:
    """The engine's input dict for one batch: ``arrays`` by ``names`` (a batch padded without
    token type ids, for a graph that takes them, is refused)."""
    given = [a for a in arrays if a is not None]
    if len(given) != len(names):
        raise ProviderError(f"the graph takes {list(names)}, the batch has {len(given)} arrays")
    return dict(zip(names, given, strict=True))
