"""The public runtime API: ``Embedder.load(folder).encode(texts)``. Light dependencies only."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, MissingDependencyError, ModelLoadError, ProviderError
from ..manifest import Manifest, Provider, sha256_file
from .batching import pad, plan_batches
from .choice import Choice, Installed, choose
from .cpu import CpuInfo, detect
from .session import Runner, cuda_available, openvino_available
from .st_compat import SentenceTransformerAPI
from .tokenize import TextTokenizer, Tokenized, check_texts
from .vectors import normalize

if TYPE_CHECKING:
    from .openvino import OpenVINORunner

log = logging.getLogger(__name__)

#: texts tokenised and embedded per chunk: bounds memory for huge inputs while keeping
#: length-sorting effective (sorting 4k texts captures nearly all of the gain)
CHUNK = 4096
#: padded tokens per batch by provider. CPU: small batches keep activations in cache, which is
#: faster on mixed lengths and no slower on queries (figures: docs/performance.md)
DEFAULT_BATCH_TOKENS = {Provider.CPU: 1024, Provider.CUDA: 32768, Provider.OPENVINO: 1024}
#: texts per batch: 32 ran faster than 128 on both mixed texts and queries (docs/performance.md)
DEFAULT_BATCH_SIZE = 32


def embed_tokenized(
    runner: Runner | OpenVINORunner,
    tok: Tokenized,
    *,
    pad_id: int,
    dim: int,
    max_batch_tokens: int,
    batch_size: int,
) -> np.ndarray:
    """Run length-sorted batches and write each row back to its input position."""
    out = np.empty((len(tok.ids), dim), dtype=np.float32)
    for index in plan_batches(tok.lengths, max_batch_tokens, batch_size):
        input_ids, mask = pad(tok.ids, index, pad_id)
        out[index] = runner.run(input_ids, mask)
    return out


def installed() -> Installed:
    """The optional engines this process can use: onnxruntime's CUDA provider, the openvino package."""
    return Installed(cuda=cuda_available(), openvino=openvino_available())


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
        truncate_dim: int | None = None,
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
        #: what ``variant``/``provider`` resolved to here, and why (``runtime.choice.choose``)
        self.choice: Choice = choose(
            self.manifest,
            variant,
            provider,
            cpu=self.cpu,
            installed=installed(),
            prefer_latency=prefer_latency,
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
        self._runner: Runner | OpenVINORunner
        try:
            if self.provider == Provider.OPENVINO:
                # imports openvino: only for this variant
                from .openvino import OpenVINORunner, default_cache_dir

                self._runner = OpenVINORunner(
                    model_file,
                    threads,
                    self.choice.engine_properties,
                    inputs=self.manifest.inputs,
                    output=self.manifest.output,
                    cache_dir=default_cache_dir(),
                )
            else:
                self._runner = Runner(
                    model_file,
                    self.provider,
                    threads,
                    spin,
                    inputs=self.manifest.inputs,
                    output=self.manifest.output,
                    int8_weights=self.choice.int8_weights,
                    expect_int8_tensors=spec.int8_tensors or None,
                )
        except (ProviderError, MissingDependencyError):
            raise
        except Exception as e:  # onnxruntime and OpenVINO raise their own error types
            engine = "OpenVINO" if self.provider == Provider.OPENVINO else "onnxruntime"
            raise ModelLoadError(f"{model_file}: {engine} cannot load it ({e})") from e
        self.max_batch_tokens = max_batch_tokens or DEFAULT_BATCH_TOKENS[self.provider]
        self.batch_size = batch_size
        self.truncate = truncate
        #: indices of the texts the last encode() call truncated at max_length
        self.last_truncated: list[int] = []
        #: tokens each text of the last encode() call was fed as (prompt and special tokens included,
        #: after truncation): callers that record token counts need not tokenise again
        self.last_lengths: np.ndarray = np.zeros(0, dtype=np.int64)
        #: Matryoshka dims every encode keeps (st_compat: only the dims the manifest lists)
        self.truncate_dim = truncate_dim

    @classmethod
    def load(cls, path: str | Path, variant: str = "auto", provider: str = "auto", **kwargs: Any) -> Embedder:
        """Load an exported folder. ``variant``: auto|fp32|fp16|int8|int8-ov; ``provider``:
        auto|cpu|cuda|openvino (int8-ov runs on OpenVINO: pip install 'dmeta-embed[openvino]').
        ``prefer_latency=True``: ``auto`` ranks onnxruntime's int8 first (single short texts per call)."""
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
    ) -> np.ndarray:
        """Embed texts in input order: float32 ``(n, dim)`` for a list, ``(dim,)`` for one str.

        ``normalize_embeddings``: None keeps the manifest's choice (already applied in the graph);
        True L2-normalises; False is refused for a normalised export (the raw vectors are gone).
        """
        if normalize_embeddings is False and self.manifest.normalize:
            # refuse before embedding anything: the raw vectors are not in this graph
            raise InputError(
                "this folder was exported with normalisation inside the graph; "
                "re-export with --no-normalize to get raw vectors"
            )
        single = isinstance(texts, str)
        items = self._prompted(check_texts(texts), prompt_name, prompt)
        truncate = self.truncate if truncate is None else truncate
        out = np.empty((len(items), self.dim), dtype=np.float32)
        self.last_truncated = []
        self.last_lengths = np.empty(len(items), dtype=np.int64)
        progress = _progress(len(items), show_progress_bar)
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            tok = self.tokenizer.encode(chunk)
            self.last_lengths[start : start + len(chunk)] = tok.lengths
            if tok.truncated:
                first = start + tok.truncated[0]
                if not truncate:
                    raise InputError(
                        f"texts[{first}] is longer than max_length={self.max_length} tokens (truncate=False)",
                        index=first,
                    )
                self.last_truncated.extend(start + i for i in tok.truncated)
            out[start : start + len(chunk)] = self.encode_tokenized(tok, batch_size=batch_size)
            progress(len(chunk))
        if self.last_truncated:
            log.warning(
                "%d text(s) longer than max_length=%d tokens were truncated (first: index %d)",
                len(self.last_truncated),
                self.max_length,
                self.last_truncated[0],
            )
        # sentence-transformers cuts after the model's Normalize and renormalises only when asked
        out, cut = self._truncated(out, truncate_dim)
        if normalize_embeddings and (cut or not self.manifest.normalize):
            out = normalize(out)
        if not convert_to_numpy:
            return list(out)  # type: ignore[return-value]
        return out[0] if single else out

    def encode_tokenized(
        self, tok: Tokenized, *, batch_size: int | None = None, max_batch_tokens: int | None = None
    ) -> np.ndarray:
        """Embed already-tokenised texts (``self.tokenizer.encode``), rows in their order, pooled as
        the manifest says; for callers that tokenise once and batch themselves (the server)."""
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


def _progress(total: int, show: bool):  # type: ignore[no-untyped-def]
    if not show or total <= CHUNK:
        return lambda n: None
    import sys

    done = [0]

    def step(n: int) -> None:
        done[0] += n
        sys.stderr.write(f"\rencoded {done[0]}/{total}")
        if done[0] >= total:
            sys.stderr.write("\n")

    return step
