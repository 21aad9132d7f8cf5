"""What every variant builder starts from: the graphs, the texts, the reference and the helpers
to run a candidate the way the runtime will (:func:`prepare` builds it once per export)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ExportError, ModelLoadError
from ..manifest import Bar, Fidelity, Pooling, Precision, Provider, TokenizerInfo
from ..runtime.batching import pad
from ..runtime.cpu import CpuInfo, detect
from ..runtime.pipeline import embed_as_runtime
from ..runtime.runner import Runner
from ..runtime.session import OnnxRuntimeRunner
from ..runtime.tokenize import TextTokenizer
from ..texts import probe_texts, search_texts
from . import graph
from .progress import stage
from .reference import cosines, fidelity, torch_embeddings
from .relative_attention import fuse_relative_attention
from .source import Source

if TYPE_CHECKING:
    import onnx

    from ..runtime.tokenize import Tokenized

log = logging.getLogger(__name__)


@dataclass
class Context:
    """One export's shared state. The graphs are never modified by a builder (each derives a copy)."""

    src: Source
    out: Path
    #: scratch folder inside the staging folder (the raw export, OpenVINO candidates)
    work: Path
    cpu: CpuInfo
    bars: dict[Precision, Bar]
    tok_info: TokenizerInfo
    hidden: int
    probe_tok: Tokenized
    calib_tok: Tokenized
    #: PyTorch fp32 embeddings of the probe texts: what every variant is measured against
    reference: np.ndarray
    #: the TorchScript export, unfused (int8-ov starts from it: OpenVINO fuses on its own)
    raw_path: Path
    #: the fused graph without pooling head (fp16 starts from it: SkipLayerNormalization kept)
    backbone: onnx.ModelProto
    #: the CPU graph (SkipLayerNormalization unfused) fp32 is made of
    cpu_backbone: onnx.ModelProto
    fusion: dict[str, int]
    passes: list[str]
    #: s8 weights where this CPU's u8×s8 kernels are exact, shifted to u8 where they saturate
    #: (``runtime.cpu``); int8 is validated as the runtime will feed it
    int8_weights: str | None
    _calib_ref: np.ndarray | None = field(default=None, repr=False)
    _fp32_model: onnx.ModelProto | None = field(default=None, repr=False)

    @property
    def max_tokens(self) -> int:
        return int(self.probe_tok.lengths.max())

    def head(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """``model`` with the pooling (and normalisation) head appended, on a copy."""
        return graph.append_head(model, self.src.pooling, self.src.normalize, self.hidden)

    @property
    def fp32_model(self) -> onnx.ModelProto:
        """The fp32 CPU graph with its head: the fp32 variant, and every speed run's baseline."""
        if self._fp32_model is None:
            self._fp32_model = self.head(self.cpu_backbone)
        return self._fp32_model

    def runner(
        self, model: onnx.ModelProto, provider: Provider = Provider.CPU, weights: str | None = None
    ) -> OnnxRuntimeRunner:
        return OnnxRuntimeRunner(model.SerializeToString(), provider, int8_weights=weights)

    def embed(
        self,
        model: onnx.ModelProto,
        tok: Tokenized | None = None,
        provider: Provider = Provider.CPU,
        weights: str | None = None,
    ) -> np.ndarray:
        """Embeddings of ``tok`` (default: the probe texts) through onnxruntime, batched as the
        runtime batches."""
        return self.embed_runner(self.runner(model, provider, weights), tok)

    def embed_runner(self, runner: Runner, tok: Tokenized | None = None) -> np.ndarray:
        """:meth:`embed` through a runner already started (one for validation and
        :meth:`batch_min_cos`), in the batches the runtime uses on its provider."""
        tok = self.probe_tok if tok is None else tok
        return embed_as_runtime(runner, tok, pad_id=self.tok_info.pad_token_id, dim=self.hidden)

    def feeds(self, tok: Tokenized | None = None, batch_size: int = 16) -> list[dict[str, np.ndarray]]:
        """``tok`` (default: the calibration texts) as length-sorted padded batches, the backbone's
        input dicts (what activation statistics are gathered on)."""
        tok = self.calib_tok if tok is None else tok
        order = np.argsort(tok.lengths, kind="stable")
        out = []
        for s in range(0, len(order), batch_size):
            ids, mask = pad(tok.ids, order[s : s + batch_size], self.tok_info.pad_token_id)
            out.append({"input_ids": ids, "attention_mask": mask})
        return out

    def batch_min_cos(self, runner: Runner, batched: np.ndarray) -> float:
        """The lowest cosine between a probe text embedded alone and the same text inside a batch:
        the 8 shortest probe texts and the longest, each alone, against ``batched`` (the probe
        vectors through ``runner`` in the runtime's length-sorted batches) and against one batch
        the nine share (the short ones mostly padding, as a server's batch of short concurrent
        requests beside one long one)."""
        tok = self.probe_tok
        pad_id = self.tok_info.pad_token_id
        order = np.argsort(tok.lengths, kind="stable")
        some = np.concatenate([order[:8], order[-1:]])
        alone = np.concatenate([runner.run(*pad(tok.ids, np.array([i]), pad_id)) for i in some])
        together = runner.run(*pad(tok.ids, some, pad_id))
        return float(min(cosines(alone, batched[some]).min(), cosines(alone, together).min()))

    def calibration_reference(self) -> np.ndarray:
        """fp32 (ONNX) embeddings of the calibration texts, computed once: the searches' target."""
        if self._calib_ref is None:
            self._calib_ref = self.embed(self.fp32_model, self.calib_tok)
        return self._calib_ref

    def fidelity(
        self, vectors: np.ndarray, precision: Precision, batch_min_cos: float | None = None
    ) -> Fidelity:
        """``vectors`` (of the probe texts) against the PyTorch reference, at ``precision``'s bar;
        ``batch_min_cos``: :meth:`batch_min_cos` of the same runner, recorded beside it."""
        f = fidelity(vectors, self.reference, self.bars[precision], self.max_tokens)
        return f if batch_min_cos is None else replace(f, batch_min_cos=round(batch_min_cos, 6))


def write_tokenizer(src: Source, folder: Path) -> TokenizerInfo:
    """Save the fast tokenizer (converted from vocab.txt when the model has no tokenizer.json)
    with truncation at max length and no padding (the runtime pads each batch)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(src.path, use_fast=True, trust_remote_code=src.trust_remote_code)
    except Exception as e:
        raise ModelLoadError(f"{src.model_id}: cannot load its tokenizer ({e})") from e
    if not tok.is_fast:
        raise ExportError(f"{src.model_id}: no fast tokenizer could be built from its files")
    backend = tok.backend_tokenizer
    backend.no_padding()
    backend.enable_truncation(src.max_length)
    backend.save(str(folder / "tokenizer.json"))
    if tok.padding_side != "right":
        log.warning("tokenizer pads on the %s; the runtime pads right", tok.padding_side)
    return TokenizerInfo(file="tokenizer.json", pad_token_id=int(tok.pad_token_id or 0))


def prepare(src: Source, out: Path, bars: dict[Precision, Bar], timings: dict[str, float]) -> Context:
    """Tokenizer, reference embeddings, the TorchScript export and the fused graphs, with each
    stage's seconds added to ``timings``."""
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 2)
        t = now

    cpu = detect()
    log.info("export on %s", cpu.describe())
    tok_info = write_tokenizer(src, out)
    tokenizer = TextTokenizer(out / "tokenizer.json", src.max_length)
    hidden = int(src.config["hidden_size"])
    heads = int(src.config["num_attention_heads"])

    probes = probe_texts(src.max_length)
    probe_tok = tokenizer.encode(probes)
    if not probe_tok.truncated:
        raise ExportError("internal: the probe set has no over-length text")
    with stage(f"reference: PyTorch embeddings of {len(probes)} probe texts"):
        reference = torch_embeddings(
            src.path,
            probes,
            src.pooling,
            src.normalize,
            src.max_length,
            trust_remote_code=src.trust_remote_code,
        )
    lap("reference")

    work = out / ".work"
    work.mkdir()
    raw = work / "raw.onnx"
    with stage("export: TorchScript → ONNX"):
        graph.export_backbone(src.path, raw, trust_remote_code=src.trust_remote_code)
    lap("torch_export")
    with stage("fuse: ONNX Runtime's BERT fusions and graph passes"):
        backbone, fusion = graph.fuse(raw, heads, hidden)
        passes = []
        if src.pooling == Pooling.CLS and graph.cls_only_last_layer(backbone):
            passes.append("cls_only_last_layer")
        if not fusion.get("Attention"):
            # MPNet: attention with a relative-position bias, which onnxruntime's patterns miss
            n = fuse_relative_attention(backbone, heads)
            if n:
                fusion["Attention"] = n
                passes.append("relative_position_attention")
            else:
                log.warning(
                    "ONNX Runtime did not fuse Attention for %s: the graph will be slower%s",
                    src.model_type,
                    graph.attention_fusion_hint(),
                )
        # the CPU variants get SkipLayerNormalization unfused; fp16 (CUDA) keeps it
        cpu_backbone = _copy(backbone)
        if graph.unfuse_skip_layernorm(cpu_backbone):
            passes.append("unfuse_skip_layernorm")
    lap("fuse")
    return Context(
        src=src,
        out=out,
        work=work,
        cpu=cpu,
        bars=bars,
        tok_info=tok_info,
        hidden=hidden,
        probe_tok=probe_tok,
        calib_tok=tokenizer.encode(search_texts(src.max_length)),
        reference=reference,
        raw_path=raw,
        backbone=backbone,
        cpu_backbone=cpu_backbone,
        fusion=fusion,
        passes=passes,
        int8_weights="u8" if cpu.int8_weights == "u8" else None,
    )


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m
