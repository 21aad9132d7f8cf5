"""The public runtime API: ``Embedder.load(folder).encode(texts)``. Light dependencies only."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ModelLoadError
from ..manifest import Manifest, Precision, Provider
from ..rerank_records import Task
from .choice import Choice
from .cpu import CpuInfo
from .loading import LoadOptions, load_plan, start_logged
from .options import OutputSpec
from .pipeline import Encoded, Pipeline, finish
from .plan import LoadPlan
from .runner import Runner
from .st_compat import SentenceTransformerAPI
from .tokenize import TextTokenizer, Token, check_texts

if TYPE_CHECKING:
    from typing_extensions import Unpack  # Python 3.10 has no typing.Unpack; only mypy reads it

#: texts tokenised and embedded per chunk: bounds memory for huge inputs while keeping
#: length-sorting effective (sorting 4k texts captures nearly all of the gain)
CHUNK = 4096


class Embedder(SentenceTransformerAPI):
    """Sentence embeddings from an exported folder; a drop-in for sentence-transformers' ``encode``.

    Made from a started :class:`~dmeta_embed.runtime.plan.LoadPlan` (:meth:`load` makes and
    starts one); it only encodes. What runs, and why, is ``embedder.plan``."""

    def __init__(
        self,
        plan: LoadPlan,
        runner: Runner | None = None,
        *,
        truncate: bool = True,
        truncate_dim: int | None = None,
    ) -> None:
        if plan.manifest.task != Task.EMBED:
            raise ModelLoadError(
                f"{plan.folder} is a {plan.manifest.task.value} folder (a cross-encoder): "
                "load it with Reranker.load, not Embedder.load"
            )
        plan, runner = start_logged(plan, runner)
        self.plan = plan
        self.path: Path = plan.folder
        self.manifest: Manifest = plan.manifest
        #: the text → vector pieces (``runtime.pipeline.Pipeline``): what the server runs apart
        self.pipeline = Pipeline(plan, runner)
        self.truncate = truncate
        #: Matryoshka dims every encode keeps (st_compat: only the dims the manifest lists)
        self.truncate_dim = truncate_dim

    @classmethod
    def load(
        cls,
        path: str | Path,
        variant: str = "auto",
        provider: str = "auto",
        *,
        truncate: bool = True,
        truncate_dim: int | None = None,
        **options: Unpack[LoadOptions],
    ) -> Embedder:
        """Load ``path``: an exported folder, or a Hugging Face hub id (at ``revision``) or a
        transformers / sentence-transformers folder, exported once into the export cache
        (``cache_dir``, else ``$DMETA_EMBED_CACHE``, else ``~/.cache/dmeta-embed/exports``) and
        reused from there: ``dmeta_embed.cache.resolve_model``. ``variant``: auto|fp32|fp16|int8|int8-ov|bf16; ``provider``:
        auto|cpu|cuda|openvino (int8-ov and bf16 run on OpenVINO; bf16 asked for on a CPU without
        native bf16 loads in f32 with a warning). ``profile``: who calls — ``library`` (the
        default: single texts and large lists), ``server`` (``auto`` takes the lowest one-text
        latency measured at export on this CPU class, and only a batch-invariant variant) or
        ``bulk`` (OpenVINO runs batches side by side in streams only). ``streams`` overrides the
        profile's OpenVINO mode (latency | throughput | latency+throughput). ``verify``: check
        the file's sha256 first. ``guard``: texts made of one token over and over run on the fp32
        graph (``runtime.guard``). The rest (:class:`~dmeta_embed.runtime.loading.LoadOptions`):
        :func:`~dmeta_embed.runtime.plan.make_plan`."""
        plan = load_plan(path, variant, provider, **options)
        return cls(plan, truncate=truncate, truncate_dim=truncate_dim)

    # -- what was loaded (the plan's fields, as sentence-transformers-style attributes)

    @property
    def choice(self) -> Choice:
        return self.plan.choice

    @property
    def variant(self) -> Precision:
        return self.plan.variant

    @property
    def provider(self) -> Provider:
        return self.plan.provider

    @property
    def cpu(self) -> CpuInfo:
        return self.plan.cpu

    @property
    def max_batch_tokens(self) -> int:
        return self.plan.max_batch_tokens

    @property
    def batch_size(self) -> int:
        return self.plan.batch_size

    @property
    def tokenizer(self) -> TextTokenizer:
        return self.pipeline.tokenizer

    @tokenizer.setter
    def tokenizer(self, value: TextTokenizer) -> None:
        self.pipeline.tokenizer = value

    @property
    def truncated_count(self) -> int:
        """Texts this Embedder has cut at max_length so far (the first cut is logged, once)."""
        return self.pipeline.truncated_count

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def max_length(self) -> int:
        return self.manifest.max_length

    def count_tokens(self, texts: str | list[str]) -> list[int]:
        """Tokens each text is fed as (after truncation, special tokens included)."""
        return self.tokenizer.count_tokens(check_texts(texts))

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

    def calibration_ranges(self, spec: OutputSpec | None = None) -> np.ndarray:
        """int8/uint8 buckets: per-dimension ``[min, max]`` (2, dim) of the built-in calibration
        texts (with the default prompt) after ``spec``'s cut and normalisation; fixed per model,
        so a text's integers do not depend on its batch."""
        return self.pipeline.calibration_ranges(spec, self.resolve_prompt(None, None))

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
        ``spec``: ``Pipeline.output_spec`` (None: the model's vectors, cut to ``truncate_dim``)."""
        items = check_texts(texts)
        spec = spec or self._output_spec()
        prompt_text = self.resolve_prompt(prompt_name, prompt)
        cut = self.truncate if truncate is None else truncate
        raw = np.empty((len(items), self.dim), dtype=np.float32)
        lengths = np.empty(len(items), dtype=np.int64)
        truncated: list[int] = []
        for first in range(0, len(items), CHUNK):  # bounds memory for huge inputs
            prepared = self.pipeline.prepare(items[first : first + CHUNK], prompt_text, cut, offset=first)
            n = len(prepared.lengths)
            raw[first : first + n] = self.pipeline.run(prepared.tokens, batch_size=batch_size)
            lengths[first : first + n] = prepared.lengths
            truncated.extend(first + i for i in prepared.truncated)
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
        int8/uint8 for a quantized ``precision`` (``ranges`` (2, dim), else the min/max of
        ``calibration_embeddings``, else :meth:`calibration_ranges`).

        ``normalize_embeddings``: None keeps the manifest's choice (already applied in the graph);
        True L2-normalises; False is refused for a normalised export (the raw vectors are gone).
        :meth:`embed` returns the same vectors with the call's token counts and truncated indices.
        """
        # checked before embedding anything: a refused option wastes no inference
        spec = self._output_spec(
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

    def _output_spec(
        self,
        truncate_dim: int | None = None,
        normalize_embeddings: bool | None = None,
        precision: str = "float32",
        *,
        ranges: np.ndarray | None = None,
        calibration_embeddings: np.ndarray | None = None,
    ) -> OutputSpec:
        return self.pipeline.output_spec(
            self.truncate_dim if truncate_dim is None else truncate_dim,
            normalize_embeddings,
            precision,
            ranges=ranges,
            calibration_embeddings=calibration_embeddings,
            prompt=self.resolve_prompt(None, None),
        )

    def __repr__(self) -> str:
        weights = f", int8_weights={self.choice.int8_weights!r}" if self.choice.int8_weights else ""
        return (
            f"Embedder({str(self.path)!r}, variant={self.variant.value!r}, provider={self.provider.value!r}"
            f"{weights}, profile={self.plan.profile.value!r}, dim={self.dim}, max_length={self.max_length}, "
            f"cpu={self.cpu.cpu_class.value!r})"
        )


def _progress(total: int, show: bool) -> Callable[[int], None] | None:
    if not show or total <= CHUNK:
        return None
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        sys.stderr.write(f"\rencoded {done[0]}/{total}")
        if done[0] >= total:
            sys.stderr.write("\n")

    return step
