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

import logging
import threading
from dataclasses import dataclass, replace

import numpy as np

from ..errors import TooLongError
from ..texts import calibration_texts
from . import guard
from .batching import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS, pad, plan_batches
from .engines import start_runner
from .options import OutputSpec, check_output
from .plan import LoadPlan, fp32_plan
from .quantize import RANGED, quantize, ranges_of
from .runner import Runner
from .tokenize import TextTokenizer, Tokenized
from .vectors import normalize

log = logging.getLogger(__name__)


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
        out[plan[0]] = runner.run(*pad(tok.ids, plan[0], pad_id, tok.type_ids))
        return out
    outputs = runner.run_many((pad(tok.ids, index, pad_id, tok.type_ids) for index in plan), len(plan))
    for index, vectors in zip(plan, outputs, strict=True):
        out[index] = vectors
    return out


def embed_as_runtime(runner: Runner, tok: Tokenized, pad_id: int, dim: int) -> np.ndarray:
    """:func:`embed_tokenized` in the batches a plan on ``runner.provider`` uses by default: how
    the export validates and times a candidate it has no folder for yet."""
    return embed_tokenized(
        runner,
        tok,
        pad_id=pad_id,
        dim=dim,
        max_batch_tokens=DEFAULT_BATCH_TOKENS[runner.provider],
        batch_size=DEFAULT_BATCH_SIZE,
    )


def finish(vectors: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """The model's vectors as ``spec`` asks: cut to ``spec.dim`` (as sentence-transformers cuts,
    after the model's own normalisation), renormalised when asked, then quantized."""
    if spec.dim is not None and spec.dim < vectors.shape[-1]:
        vectors = np.ascontiguousarray(vectors[..., : spec.dim])
    if spec.normalize:
        vectors = normalize(vectors)
    return quantize(vectors, spec.precision, spec.ranges)


class Pipeline:
    """A started plan's text → vector machinery, in the pieces a server runs apart: :meth:`prepare`
    (on the event loop), :meth:`run` (on the inference thread, batched with other requests), then
    :func:`finish` with :meth:`output_spec`. ``Embedder`` chains them; the server calls them
    itself. Thread-safe: the runner serialises its calls, the counters take a lock."""

    def __init__(self, plan: LoadPlan, runner: Runner, tokenizer: TextTokenizer | None = None) -> None:
        self.plan = plan
        self.manifest = plan.manifest
        self.runner = runner
        #: replaced (not mutated) when ``max_seq_length`` is lowered; a reranker's pipeline is
        #: given its pair tokenizer (``runtime.reranker``)
        self.tokenizer = tokenizer or TextTokenizer(plan.tokenizer_file, plan.manifest.max_length)
        #: texts cut at max_length so far (the first cut is logged, once)
        self.truncated_count = 0
        self._lock = threading.Lock()
        # its own lock: computing the calibration vectors must not hold up truncation counting
        self._calibration_lock = threading.Lock()
        self._calibration: np.ndarray | None = None
        #: the fp32 graph for texts the guard routes (``runtime.guard``), started on first need
        self._fp32: Runner | None = None
        self._fp32_lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def prepare(
        self,
        items: list[str],
        prompt: str = "",
        truncate: bool = True,
        *,
        offset: int = 0,
        count: bool = True,
    ) -> Prepared:
        """``items`` (checked texts) as the model will see them: ``prompt`` put first, tokenised,
        and cut at max_length (``truncate``) or refused with a TooLongError naming the first text
        too long (its index + ``offset``). ``count``: add the cuts to :attr:`truncated_count`."""
        tok = self.tokenizer.encode([prompt + t for t in items] if prompt else items)
        if tok.truncated and count:
            first = offset + tok.truncated[0]
            if not truncate:
                raise TooLongError(
                    f"texts[{first}] is longer than max_length={self.tokenizer.max_length} tokens "
                    "(truncate=False)",
                    index=first,
                )
            self.count_truncated(len(tok.truncated), first)
        return Prepared(tok, prompt)

    def count_truncated(self, n: int, first: int) -> None:
        # once per loaded model, not per call: a loop of encode calls on long texts says it once
        with self._lock:
            self.truncated_count += n
            once = self.truncated_count == n
        if once:
            log.warning(
                "%d text(s) longer than max_length=%d tokens were truncated (first: index %d); "
                "later truncations are counted in Embedder.truncated_count, not logged",
                n,
                self.tokenizer.max_length,
                first,
            )

    def run(
        self,
        tok: Tokenized,
        *,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        runner: Runner | None = None,
    ) -> np.ndarray:
        """The model's vectors for prepared texts, rows in their order, in the plan's batches
        (length-sorted, at most ``max_batch_tokens`` padded tokens and ``batch_size`` texts).
        Where the plan guards, texts made of one token over and over run on the fp32 graph
        (``runtime.guard``): decided per text, so a text gets the same vector alone or in any
        batch. ``runner``: another engine started from the same plan (a server worker's; default
        this pipeline's)."""
        sizes = {
            "pad_id": self.manifest.tokenizer.pad_token_id,
            "dim": self.dim,
            "max_batch_tokens": max_batch_tokens or self.plan.max_batch_tokens,
            "batch_size": batch_size or self.plan.batch_size,
        }
        engine = runner or self.runner
        rows = guard.routed(tok, self.tokenizer.unk_id) if self.plan.guard else np.empty(0, dtype=np.int64)
        if not len(rows):
            return embed_tokenized(engine, tok, **sizes)
        out = np.empty((len(tok.ids), self.dim), dtype=np.float32)
        rest = np.setdiff1d(np.arange(len(tok.ids)), rows)
        if len(rest):
            out[rest] = embed_tokenized(engine, guard.take(tok, rest), **sizes)
        out[rows] = embed_tokenized(self.fp32_runner(), guard.take(tok, rows), **sizes)
        return out

    def fp32_runner(self) -> Runner:
        """The fp32 graph the guard routes to (``plan.fp32_plan``), started the first time it is
        needed (a server starts it while warming up): a second session, fp32's weights in memory.
        Shared by every worker: it serialises their routed texts (rare by construction)."""
        with self._fp32_lock:
            if self._fp32 is None:
                self._fp32 = start_runner(fp32_plan(self.plan))
            return self._fp32

    def output_spec(
        self,
        truncate_dim: int | None = None,
        normalize_embeddings: bool | None = None,
        precision: str = "float32",
        *,
        ranges: np.ndarray | None = None,
        calibration_embeddings: np.ndarray | None = None,
        prompt: str = "",
    ) -> OutputSpec:
        """What :func:`finish` does to the model's vectors, checked before anything is embedded.

        ``truncate_dim``: the model's dim or a Matryoshka dim the manifest lists (None: no cut).
        ``normalize_embeddings``: None keeps the manifest's choice (inside the graph); True
        L2-normalises (after a cut too); False is refused for a normalised export.
        ``precision``: float32|int8|uint8|binary|ubinary; int8/uint8 use ``ranges`` (2, dim), else
        the min/max of ``calibration_embeddings``, else :meth:`calibration_ranges` (``prompt``:
        the one the calibration texts get)."""
        spec = check_output(self.manifest, truncate_dim, normalize_embeddings, precision)
        if spec.precision not in RANGED:
            return spec
        if ranges is None:
            if calibration_embeddings is not None:
                ranges = ranges_of(np.asarray(calibration_embeddings, dtype=np.float32))
            else:
                ranges = self.calibration_ranges(spec, prompt)
        return replace(spec, ranges=np.asarray(ranges, dtype=np.float32))

    def calibration_ranges(self, spec: OutputSpec | None = None, prompt: str = "") -> np.ndarray:
        """int8/uint8 buckets: per-dimension ``[min, max]`` (2, dim) of the built-in calibration
        texts (``dmeta_embed.texts.calibration_texts``, with ``prompt``) after ``spec``'s cut and
        normalisation. Fixed per model, so a text's integers do not depend on its batch."""
        with self._calibration_lock:
            if self._calibration is None:
                prepared = self.prepare(calibration_texts(), prompt, True, count=False)
                self._calibration = self.run(prepared.tokens)
            raw = self._calibration
        spec = spec or OutputSpec()
        return ranges_of(finish(raw, OutputSpec(spec.dim, spec.normalize)))
