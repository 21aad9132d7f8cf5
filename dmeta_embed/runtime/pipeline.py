"""The one text → vector step, in pieces the server can run apart (parse and tokenise on the event
loop, batch on the inference thread, render after):

1. :class:`Prepared`: the texts with their prompt, tokenised, truncated at max_length or refused;
2. the runner over length-sorted, token-bounded batches (:func:`embed_tokenized`), rows back in
   input order;
3. :func:`finish` with an :class:`OutputSpec`: Matryoshka cut, L2 normalisation, quantization.

``Embedder.embed`` chains them and returns :class:`Encoded`, the call's vectors together with
the facts about that call (tokens fed, texts truncated), so concurrent calls never read each
other's. Light dependencies only (numpy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .batching import pad, plan_batches
from .quantize import quantize
from .runner import Runner
from .tokenize import Tokenized
from .vectors import normalize


@dataclass(frozen=True)
class Prepared:
    """Texts as the model will see them: the prompt put in front, tokenised, checked for length."""

    tokens: Tokenized
    #: the prompt put before each text ("" for none): offsets into a prompted text start past it
    prompt: str

    @property
    def lengths(self) -> np.ndarray:
        """Tokens each text is fed as (prompt and special tokens included, after truncation)."""
        return self.tokens.lengths

    @property
    def truncated(self) -> list[int]:
        """Indices of the texts cut at max_length."""
        return self.tokens.truncated


@dataclass(frozen=True)
class OutputSpec:
    """What happens to the model's vectors before they are returned (checked once, per call)."""

    #: Matryoshka dims to keep (None: all)
    dim: int | None = None
    #: L2-normalise after the cut (the model's own normalisation sits inside the graph)
    normalize: bool = False
    #: float32, int8, uint8, binary or ubinary (``runtime.quantize``)
    precision: str = "float32"
    #: int8/uint8: per-dimension ``[min, max]`` (2, dim) of the cut, normalised vectors
    ranges: np.ndarray | None = None


@dataclass(frozen=True)
class Encoded:
    """One ``Embedder.embed`` call's result: its vectors and the facts about that call only."""

    #: ``(n, dim)`` in input order: float32, or int8/uint8 for a quantized precision
    vectors: np.ndarray
    #: tokens each text was fed as (prompt and special tokens included, after truncation), int64
    lengths: np.ndarray
    #: indices of the texts cut at max_length (empty when none was)
    truncated: tuple[int, ...]

    @property
    def tokens(self) -> int:
        """Tokens fed in all (what OpenAI's ``usage.prompt_tokens`` counts)."""
        return int(self.lengths.sum())


def embed_tokenized(
    runner: Runner,
    tok: Tokenized,
    *,
    pad_id: int,
    dim: int,
    max_batch_tokens: int,
    batch_size: int,
) -> np.ndarray:
    """Run length-sorted batches and write each row back to its input position. The runner gets
    them all at once (``Runner.run_many``), padded as it takes them, and decides itself whether
    to run several at a time (OpenVINO's streams)."""
    out = np.empty((len(tok.ids), dim), dtype=np.float32)
    plan = plan_batches(tok.lengths, max_batch_tokens, batch_size)
    if len(plan) == 1:
        out[plan[0]] = runner.run(*pad(tok.ids, plan[0], pad_id))
        return out
    outputs = runner.run_many((pad(tok.ids, index, pad_id) for index in plan), len(plan))
    for index, vectors in zip(plan, outputs, strict=True):
        out[index] = vectors
    return out


def finish(vectors: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """The model's vectors as ``spec`` asks: cut to ``spec.dim`` (as sentence-transformers cuts,
    after the model's own normalisation), renormalised when asked, then quantized."""
    if spec.dim is not None and spec.dim < vectors.shape[-1]:
        vectors = np.ascontiguousarray(vectors[..., : spec.dim])
    if spec.normalize:
        vectors = normalize(vectors)
    return quantize(vectors, spec.precision, spec.ranges)
