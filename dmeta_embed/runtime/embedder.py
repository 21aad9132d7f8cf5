"""The public runtime API: ``Embedder.load(folder).encode(texts)``. Light dependencies only."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError, ProviderError, TooLongError
from ..manifest import Manifest, Provider, sha256_file
from ..texts import calibration_texts
from .choice import Choice, choose
from .cpu import CpuInfo, detect
from .engines import start_runner
from .installed import Installed, installed
from .options import check_output
from .pipeline import Encoded, OutputSpec, Prepared, embed_tokenized, finish
from .quantize import RANGED, ranges_of
from .runner import Runner
from .st_compat import SentenceTransformerAPI
from .tokenize import TextTokenizer, Token, Tokenized, check_texts

log = logging.getLogger(__name__)

#: texts tokenised and embedded per chunk: bounds memory for huge inputs while keeping
#: length-sorting effective (sorting 4k texts captures nearly all of the gain)
CHUNK = 4096
#: padded tokens per batch by provider. CPU: small batches keep activations in cache, which is
#: faster on mixed lengths and no slower on queries (figures: docs/performance.md)
DEFAULT_BATCH_TOKENS = {Provider.CPU: 1024, Provider.CUDA: 32768, Provider.OPENVINO: 1024}
#: texts per batch: 32 ran faster than 128 on both mixed texts and queries (docs/performance.md)
DEFAULT_BATCH_SIZE = 32


class Embedder(SentenceTransformerAPI):
    """Sentence embeddings from an exported folder; a drop-in for sentence-transformers' ``encode``."""

    def __init__(
        self,
        path: str | Path,
        variant: str = "auto",
        provider: str = "auto",
        *,
        threads: int | None = None,
        max_batch_tokens: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        truncate: bool = True,
        verify: bool = True,
        spin: bool = True,
        prefer_latency: bool = False,
        batched_requests: bool = False,
        truncate_dim: int | None = None,
        throughput: bool | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ModelLoadError(f"model folder not found: {path}")
        self.manifest = Manifest.load(self.path)
        if self.manifest.tokenizer.padding_side != "right":
            raise ModelLoadError(
                f"{self.path}: the manifest says padding_side="
                f"{self.manifest.tokenizer.padding_side!r}; this runtime pads right"
            )
        #: this CPU's class and int8 kernels (``runtime.cpu.detect``)
        self.cpu: CpuInfo = detect()
        found = installed()
        # what `auto` must take into account for this caller (runtime.choice.choose)
        needs = {"prefer_latency": prefer_latency, "batched_requests": batched_requests}
        try:
            self._start(variant, provider, found, needs, threads, spin, verify, throughput)
        except ProviderError as e:
            # onnxruntime-gpu lists CUDA wherever it is installed, also where CUDA cannot start
            # (no driver, missing libraries): `auto` then runs on the CPU, with the reason logged;
            # an explicit provider='cuda' still fails
            if (
                provider != "auto"
                or getattr(self, "choice", None) is None
                or self.choice.provider != Provider.CUDA
            ):
                raise
            log.warning("%s: CUDA is listed but did not start (%s); running on the CPU", self.path, e)
            self._start(
                variant, provider, replace(found, cuda=False), needs, threads, spin, verify, throughput
            )
        self.max_batch_tokens = max_batch_tokens or DEFAULT_BATCH_TOKENS[self.provider]
        self.batch_size = batch_size
        self.truncate = truncate
        #: Matryoshka dims every encode keeps (st_compat: only the dims the manifest lists)
        self.truncate_dim = truncate_dim
        #: texts this Embedder has cut at max_length so far (the first cut is logged, once)
        self.truncated_count = 0
        self._lock = threading.Lock()
        # its own lock: computing the calibration vectors must not hold up truncation counting
        self._calibration_lock = threading.Lock()
        self._calibration: np.ndarray | None = None

    def _start(
        self,
        variant: str,
        provider: str,
        found: Installed,
        needs: dict[str, bool],
        threads: int | None,
        spin: bool,
        verify: bool,
        throughput: bool | None = None,
    ) -> None:
        """Choose what to load on this machine (``runtime.choice.choose``) and start its engine."""
        #: what ``variant``/``provider`` resolved to here, and why (``runtime.choice.choose``)
        self.choice: Choice = choose(
            self.manifest,
            variant,
            provider,
            cpu=self.cpu,
            installed=found,
            **needs,
        )
        log.info(
            "%s: %s on %s (%s)",
            self.path,
            self.choice.variant.value,
            self.choice.provider.value,
            self.choice.reason,
        )
        self.variant, self.provider = self.choice.variant, self.choice.provider
        spec = self.manifest.variants[self.variant.value]
        model_file = self.path / spec.file
        tok_file = self.path / self.manifest.tokenizer.file
        for f in (model_file, tok_file):
            if not f.is_file():
                raise ModelLoadError(f"{self.path}: {f.name} is missing")
        if verify:
            digest = sha256_file(model_file)
            if digest != spec.sha256:
                raise ModelLoadError(
                    f"{model_file}: checksum mismatch (file is corrupted or was "
                    f"changed after export): {digest[:12]} != {spec.sha256[:12]}"
                )
        self.tokenizer = TextTokenizer(tok_file, self.manifest.max_length)
        if self.choice.warning:
            log.warning("%s: %s", self.path, self.choice.warning)
        # large encode calls in streams (OpenVINO), unless this Embedder answers requests
        bulk = throughput is None and not any(needs.values())
        self._runner: Runner = start_runner(
            model_file, self.manifest, self.choice, threads, spin, throughput is True, bulk
        )

    @classmethod
    def load(cls, path: str | Path, variant: str = "auto", provider: str = "auto", **kwargs: Any) -> Embedder:
        """Load an exported folder. ``variant``: auto|fp32|fp16|int8|int8-ov|bf16; ``provider``:
        auto|cpu|cuda|openvino (int8-ov and bf16 run on OpenVINO: pip install 'dmeta-embed[openvino]';
        bf16 asked for on a CPU without native bf16 loads in f32 with a warning).
        ``prefer_latency=True``: ``auto`` loads the variant with the lowest one-text latency measured
        at export on this CPU class (single short texts per call);
        ``batched_requests=True``: ``auto`` loads only a batch-invariant variant (a server that
        batches concurrent requests: each answer must not depend on its neighbours).
        ``throughput``: how the OpenVINO variants (bf16, int8-ov) use the cores; onnxruntime's
        variants are unchanged. ``None`` (the default): one text or a small call runs in latency
        mode (one inference on every core), and a call of two batches or more per stream runs them
        side by side in streams, on a second compiled copy made at the first such call (more
        tokens/s, the same vectors, more memory; not with ``prefer_latency`` or
        ``batched_requests``, a server's settings). ``True``: streams only, for bulk work (the
        corpus job: one text alone waits about twice as long). ``False``: latency mode only."""
        return cls(path, variant, provider, **kwargs)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def max_length(self) -> int:
        return self.manifest.max_length

    def count_tokens(self, texts: str | list[str]) -> list[int]:
        """Tokens each text is fed as (after truncation, special tokens included)."""
        return self.tokenizer.count_tokens(check_texts(texts))

    # -- the text → vector step (runtime.pipeline), in the pieces the server runs apart

    def prepare(
        self,
        texts: str | list[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate: bool | None = None,
    ) -> Prepared:
        """Texts as the model will see them: the prompt resolved as sentence-transformers resolves
        it (``prompt``, else ``prompt_name``, else the default prompt), tokenised, and cut at
        max_length (``truncate``, default the Embedder's) or refused with an InputError naming the
        first text that is too long."""
        items = check_texts(texts)
        return self._prepare(items, self.resolve_prompt(prompt_name, prompt), truncate, 0)

    def _prepare(
        self, items: list[str], prompt: str, truncate: bool | None, offset: int, *, count: bool = True
    ) -> Prepared:
        tok = self.tokenizer.encode([prompt + t for t in items] if prompt else items)
        if tok.truncated and count:
            first = offset + tok.truncated[0]
            if not (self.truncate if truncate is None else truncate):
                raise TooLongError(
                    f"texts[{first}] is longer than max_length={self.max_seq_length} tokens (truncate=False)",
                    index=first,
                )
            self._count_truncated(len(tok.truncated), first)
        return Prepared(tok, prompt)

    def tokens(
        self,
        texts: str | list[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        add_special_tokens: bool = True,
    ) -> list[list[Token]]:
        """Each text's tokens as the model is fed them (prompt first, truncated at max_length),
        with character offsets into the prompted text: what TEI's ``/tokenize`` answers."""
        p = self.resolve_prompt(prompt_name, prompt)
        items = check_texts(texts)
        return self.tokenizer.tokens([p + t for t in items] if p else items, add_special_tokens)

    def _count_truncated(self, n: int, first: int) -> None:
        # once per Embedder, not per call: a loop of encode calls on long texts says it once
        with self._lock:
            self.truncated_count += n
            once = self.truncated_count == n
        if once:
            log.warning(
                "%d text(s) longer than max_length=%d tokens were truncated (first: index %d); "
                "later truncations are counted in Embedder.truncated_count, not logged",
                n,
                self.max_seq_length,
                first,
            )

    def output_spec(
        self,
        truncate_dim: int | None = None,
        normalize_embeddings: bool | None = None,
        precision: str = "float32",
        *,
        ranges: np.ndarray | None = None,
        calibration_embeddings: np.ndarray | None = None,
    ) -> OutputSpec:
        """What :meth:`finish` does to the model's vectors, checked before anything is embedded.

        ``truncate_dim``: a Matryoshka dim the manifest lists (None: this Embedder's
        ``truncate_dim``). ``normalize_embeddings``: None keeps the manifest's choice (inside the
        graph); True L2-normalises (after a cut too); False is refused for a normalised export.
        ``precision``: float32|int8|uint8|binary|ubinary; int8/uint8 use ``ranges`` (2, dim), else
        the min/max of ``calibration_embeddings``, else :meth:`calibration_ranges`."""
        dim = self.truncate_dim if truncate_dim is None else truncate_dim
        spec = check_output(self.manifest, dim, normalize_embeddings, precision)
        if precision not in RANGED:
            return spec
        if ranges is None:
            if calibration_embeddings is not None:
                ranges = ranges_of(np.asarray(calibration_embeddings, dtype=np.float32))
            else:
                ranges = self.calibration_ranges(spec)
        return replace(spec, ranges=np.asarray(ranges, dtype=np.float32))

    def calibration_ranges(self, spec: OutputSpec | None = None) -> np.ndarray:
        """int8/uint8 buckets: per-dimension ``[min, max]`` (2, dim) of the built-in calibration
        texts (``dmeta_embed.texts.calibration_texts``, with the default prompt) after ``spec``'s
        cut and normalisation. Fixed per model, so a text's integers do not depend on its batch."""
        with self._calibration_lock:
            if self._calibration is None:
                prepared = self._prepare(
                    calibration_texts(), self.resolve_prompt(None, None), True, 0, count=False
                )
                self._calibration = self.encode_tokenized(prepared.tokens)
            raw = self._calibration
        spec = spec or OutputSpec()
        return ranges_of(finish(raw, OutputSpec(spec.dim, spec.normalize)))

    def embed(
        self,
        texts: str | list[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate: bool | None = None,
        spec: OutputSpec | None = None,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Encoded:
        """Embed texts in input order; the result carries this call's token counts and truncated
        indices (nothing is kept on the Embedder, so concurrent calls cannot mix them up).
        ``spec``: :meth:`output_spec` (None: the model's vectors, cut to ``truncate_dim``)."""
        items = check_texts(texts)
        spec = spec or self.output_spec()
        prompt_text = self.resolve_prompt(prompt_name, prompt)
        raw = np.empty((len(items), self.dim), dtype=np.float32)
        lengths = np.empty(len(items), dtype=np.int64)
        truncated: list[int] = []
        for start in range(0, len(items), CHUNK):  # bounds memory for huge inputs
            prepared = self._prepare(items[start : start + CHUNK], prompt_text, truncate, start)
            n = len(prepared.lengths)
            raw[start : start + n] = self.encode_tokenized(prepared.tokens, batch_size=batch_size)
            lengths[start : start + n] = prepared.lengths
            truncated.extend(start + i for i in prepared.truncated)
            if progress is not None:
                progress(n)
        return Encoded(finish(raw, spec), lengths, tuple(truncated))

    def encode(
        self,
        texts: str | list[str],
        batch_size: int | None = None,
        normalize_embeddings: bool | None = None,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
        *,
        truncate: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str = "float32",
        ranges: np.ndarray | None = None,
        calibration_embeddings: np.ndarray | None = None,
    ) -> np.ndarray:
        """Embed texts in input order: ``(n, dim)`` for a list, ``(dim,)`` for one str; float32, or
        int8/uint8 for a quantized ``precision`` (see :meth:`output_spec`).

        ``normalize_embeddings``: None keeps the manifest's choice (already applied in the graph);
        True L2-normalises; False is refused for a normalised export (the raw vectors are gone).
        :meth:`embed` returns the same vectors with the call's token counts and truncated indices.
        """
        # checked before embedding anything: a refused option wastes no inference
        spec = self.output_spec(
            truncate_dim,
            normalize_embeddings,
            precision,
            ranges=ranges,
            calibration_embeddings=calibration_embeddings,
        )
        n = len(texts) if isinstance(texts, list) else 1
        out = self.embed(
            texts,
            prompt_name=prompt_name,
            prompt=prompt,
            truncate=truncate,
            spec=spec,
            batch_size=batch_size,
            progress=_progress(n, show_progress_bar),
        ).vectors
        if not convert_to_numpy:
            return list(out)  # type: ignore[return-value]
        return out[0] if isinstance(texts, str) else out

    def encode_tokenized(
        self, tok: Tokenized, *, batch_size: int | None = None, max_batch_tokens: int | None = None
    ) -> np.ndarray:
        """The model's vectors for already-prepared texts (:meth:`prepare`), rows in their order:
        for callers that prepare once and batch themselves (the server's batcher); then
        :func:`~dmeta_embed.runtime.pipeline.finish` with :meth:`output_spec`."""
        return embed_tokenized(
            self._runner,
            tok,
            pad_id=self.manifest.tokenizer.pad_token_id,
            dim=self.dim,
            max_batch_tokens=max_batch_tokens or self.max_batch_tokens,
            batch_size=batch_size or self.batch_size,
        )

    def __repr__(self) -> str:
        weights = f", int8_weights={self.choice.int8_weights!r}" if self.choice.int8_weights else ""
        return (
            f"Embedder({str(self.path)!r}, variant={self.variant.value!r}, provider={self.provider.value!r}"
            f"{weights}, dim={self.dim}, max_length={self.max_length}, cpu={self.cpu.cpu_class.value!r})"
        )


def _progress(total: int, show: bool) -> Callable[[int], None] | None:
    if not show or total <= CHUNK:
        return None
    import sys

    done = [0]

    def step(n: int) -> None:
        done[0] += n
        sys.stderr.write(f"\rencoded {done[0]}/{total}")
        if done[0] >= total:
            sys.stderr.write("\n")

    return step
