"""The public runtime API: ``Embedder.load(folder).encode(texts)``. Light dependencies only."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelLoadError, ProviderError
from ..manifest import Manifest, Precision, sha256_file
from .batching import pad, plan_batches
from .cpu import int8_is_fast, int8_units, why_not_int8
from .session import CPU, CUDA, OPENVINO, Runner, cuda_available, openvino_available
from .st_compat import SentenceTransformerAPI
from .tokenize import TextTokenizer, Tokenized, check_texts
from .vectors import normalize

log = logging.getLogger(__name__)

#: texts tokenised and embedded per chunk: bounds memory for huge inputs while keeping
#: length-sorting effective (sorting 4k texts captures nearly all of the gain)
CHUNK = 4096
#: padded tokens per batch by provider. CPU: small batches keep activations in cache, which is
#: faster on mixed lengths and no slower on queries (figures: docs/performance.md)
DEFAULT_BATCH_TOKENS = {CPU: 1024, CUDA: 32768, OPENVINO: 1024}
#: texts per batch: 32 ran faster than 128 on both mixed texts and queries (docs/performance.md)
DEFAULT_BATCH_SIZE = 32


def embed_tokenized(
    runner: Runner, tok: Tokenized, *, pad_id: int, dim: int, max_batch_tokens: int, batch_size: int,
) -> np.ndarray:
    """Run length-sorted batches and write each row back to its input position."""
    out = np.empty((len(tok.ids), dim), dtype=np.float32)
    for index in plan_batches(tok.lengths, max_batch_tokens, batch_size):
        input_ids, mask = pad(tok.ids, index, pad_id)
        out[index] = runner.run(input_ids, mask)
    return out


def _choose(manifest: Manifest, variant: str, provider: str, units: str,
            single_requests: bool = False) -> tuple[Precision, str]:
    """(variant, provider) to load; ``units`` is ``int8_units()`` of this CPU; ``single_requests``:
    the caller embeds mostly one short text per call (a server), where ``auto`` ranks onnxruntime's
    int8 above int8-ov."""
    if provider not in {"auto", "cpu", "cuda", "openvino"}:
        raise ProviderError(f"provider must be auto, cpu, cuda or openvino, got {provider!r}")
    if variant not in {"auto", *(p.value for p in Precision)}:
        raise ProviderError(f"variant must be auto, {', '.join(p.value for p in Precision)}, got {variant!r}")
    have = manifest.variants
    if provider == "cuda" and not cuda_available():
        raise ProviderError("provider='cuda' asked for, but no CUDA provider is available "
                            "(pip install 'dmeta-embed[gpu]' on a machine with an NVIDIA GPU)")
    fast = int8_is_fast(units)
    ov = Precision.INT8_OV.value
    if provider == "openvino" or variant == ov:
        # int8-ov is the only graph built for OpenVINO (the others use onnxruntime's contrib ops)
        if provider not in {"auto", "openvino"} or variant not in {"auto", ov}:
            raise ProviderError(f"variant {ov!r} runs on provider 'openvino' only, and provider 'openvino' runs "
                                f"only variant {ov!r} (asked: variant={variant!r}, provider={provider!r})")
        if not openvino_available():
            raise ProviderError(f"variant {ov!r} needs onnxruntime's OpenVINO provider: pip install "
                                "'dmeta-embed[openvino]' (instead of [cpu]; both provide the onnxruntime module)")
        if ov not in have:
            raise ProviderError(f"variant {ov!r} is not in this folder (it has: {', '.join(have)}); "
                                "export it with --variants ...,int8-ov")
        if not fast:
            log.warning("int8-ov asked for, but %s: its fidelity and speed were not validated for this CPU",
                        why_not_int8(units))
        return Precision.INT8_OV, OPENVINO
    use_cuda = provider == "cuda" or (provider == "auto" and cuda_available() and variant != "int8")
    if variant != "auto":
        if variant not in have:
            raise ProviderError(f"variant {variant!r} is not in this folder (it has: {', '.join(have)})")
        if variant == "int8" and not use_cuda and not fast:
            log.warning("int8 asked for, but %s: its fidelity and speed were not validated for this CPU",
                        why_not_int8(units))
        return Precision(variant), CUDA if use_cuda else CPU
    if use_cuda:
        for p in ("fp16", "fp32"):
            if p in have:
                return Precision(p), CUDA
    # the fidelity bar was measured on an int8-exact CPU; elsewhere int8 may saturate, so fp32
    int8_passed = "int8" in have and have["int8"].fidelity.passed
    # OpenVINO's static int8 where it is installed: 1.4-1.5x onnxruntime's dynamic int8 on batches.
    # Not for single requests when int8 can run: they change the input shape at every call and
    # OpenVINO pays ~1 ms per change (Dmeta shape, served over loopback: int8 391 req/s at
    # concurrency 32 and 209 at 1, int8-ov 370 and 151; benchmarks/results/serve_dmeta-shaped_*)
    ov_passed = ov in have and have[ov].fidelity.passed
    if provider == "auto" and fast and ov_passed and openvino_available() and not (single_requests and int8_passed):
        return Precision.INT8_OV, OPENVINO
    if int8_passed and fast:
        return Precision.INT8, CPU
    if "fp32" in have:
        if int8_passed:
            log.info("int8 skipped: %s; using fp32", why_not_int8(units))
        return Precision.FP32, CPU
    if "int8" in have:
        if not int8_passed:
            log.warning("only int8 is available and it missed its fidelity bar; using it anyway")
        else:
            log.warning("only int8 is available, but %s: its fidelity and speed were not validated "
                        "for this CPU; using it anyway", why_not_int8(units))
        return Precision.INT8, CPU
    raise ProviderError(f"no CPU variant in this folder (it has: {', '.join(have)}); pass provider='cuda'")


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
        single_requests: bool = False,
        truncate_dim: int | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ModelLoadError(f"model folder not found: {path}")
        self.manifest = Manifest.load(self.path)
        #: this CPU's int8 units (``runtime.cpu.int8_units``): decides whether ``auto`` may pick int8
        self.int8_units = int8_units()
        self.variant, self.provider = _choose(self.manifest, variant, provider, self.int8_units, single_requests)
        spec = self.manifest.variants[self.variant.value]
        model_file = self.path / spec.file
        tok_file = self.path / self.manifest.tokenizer.file
        for f in (model_file, tok_file):
            if not f.is_file():
                raise ModelLoadError(f"{self.path}: {f.name} is missing")
        if verify:
            digest = sha256_file(model_file)
            if digest != spec.sha256:
                raise ModelLoadError(f"{model_file}: checksum mismatch (file is corrupted or was "
                                     f"changed after export): {digest[:12]} != {spec.sha256[:12]}")
        self.tokenizer = TextTokenizer(tok_file, self.manifest.max_length)
        try:
            self._runner = Runner(model_file, self.provider, threads, spin, spec.engine_properties)
        except ProviderError:
            raise
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelLoadError(f"{model_file}: onnxruntime cannot load it ({e})") from e
        self.max_batch_tokens = max_batch_tokens or DEFAULT_BATCH_TOKENS[self.provider]
        self.batch_size = batch_size
        self.truncate = truncate
        #: indices of the texts the last encode() call truncated at max_length
        self.last_truncated: list[int] = []
        #: Matryoshka dims every encode keeps (st_compat: only the dims the manifest lists)
        self.truncate_dim = truncate_dim

    @classmethod
    def load(cls, path: str | Path, variant: str = "auto", provider: str = "auto", **kwargs: Any) -> Embedder:
        """Load an exported folder. ``variant``: auto|fp32|fp16|int8|int8-ov; ``provider``:
        auto|cpu|cuda|openvino (int8-ov runs on openvino, with onnxruntime-openvino installed)."""
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
            raise InputError("this folder was exported with normalisation inside the graph; "
                             "re-export with --no-normalize to get raw vectors")
        single = isinstance(texts, str)
        items = self._prompted(check_texts(texts), prompt_name, prompt)
        truncate = self.truncate if truncate is None else truncate
        out = np.empty((len(items), self.dim), dtype=np.float32)
        self.last_truncated = []
        progress = _progress(len(items), show_progress_bar)
        for start in range(0, len(items), CHUNK):
            chunk = items[start:start + CHUNK]
            tok = self.tokenizer.encode(chunk)
            if tok.truncated:
                first = start + tok.truncated[0]
                if not truncate:
                    raise InputError(f"texts[{first}] is longer than max_length={self.max_length} "
                                     "tokens (truncate=False)", index=first)
                self.last_truncated.extend(start + i for i in tok.truncated)
            out[start:start + len(chunk)] = self.encode_tokenized(tok, batch_size=batch_size)
            progress(len(chunk))
        if self.last_truncated:
            log.warning("%d text(s) longer than max_length=%d tokens were truncated (first: index %d)",
                        len(self.last_truncated), self.max_length, self.last_truncated[0])
        # sentence-transformers cuts after the model's Normalize and renormalises only when asked
        out, cut = self._truncated(out, truncate_dim)
        if normalize_embeddings and (cut or not self.manifest.normalize):
            out = normalize(out)
        if not convert_to_numpy:
            return list(out)  # type: ignore[return-value]
        return out[0] if single else out

    def encode_tokenized(self, tok: Tokenized, *, batch_size: int | None = None,
                         max_batch_tokens: int | None = None) -> np.ndarray:
        """Embed already-tokenised texts (``self.tokenizer.encode``), rows in their order, pooled as
        the manifest says; for callers that tokenise once and batch themselves (the server)."""
        return embed_tokenized(
            self._runner, tok, pad_id=self.manifest.tokenizer.pad_token_id, dim=self.dim,
            max_batch_tokens=max_batch_tokens or self.max_batch_tokens, batch_size=batch_size or self.batch_size)

    def __repr__(self) -> str:
        return (f"Embedder({str(self.path)!r}, variant={self.variant.value!r}, provider={self.provider!r}, "
                f"dim={self.dim}, max_length={self.max_length}, int8_units={self.int8_units!r})")


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
