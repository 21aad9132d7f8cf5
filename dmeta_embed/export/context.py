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
from ..manifest import SCORE_BARS, VARIANT_FILES, Bar, Fidelity, Pooling, Precision, Provider, TokenizerInfo
from ..rerank_records import ScoreFidelity, Task
from ..runtime.batching import pad
from ..runtime.cpu import CpuInfo, detect
from ..runtime.pipeline import embed_as_runtime
from ..runtime.runner import Runner
from ..runtime.session import OnnxRuntimeRunner
from ..runtime.tokenize import PairTokenizer, TextTokenizer
from ..texts import calibration_pairs, probe_pairs, probe_texts, search_texts
from . import graph
from .int8_calibration import FEED_TOKENS, token_batches
from .memory import Peaks, release
from .progress import stage
from .reference import cosines, fidelity, torch_embeddings
from .relative_attention import fuse_relative_attention
from .relative_buckets import tabulate
from .rerank_head import ClassifierHead, append_classifier, load_classifier, read_head, torch_logits
from .score_fidelity import batch_max_diff, score_fidelity, score_rows
from .source import Source

if TYPE_CHECKING:
    import onnx

    from ..runtime.tokenize import Tokenized
    from .speed import Pass

log = logging.getLogger(__name__)


@dataclass
class Context:
    """One export's shared state. The graphs live on disk (``work``, and the fp32 variant's file in
    ``out``) and are loaded by the builder that needs one, so a base-size model's 440 MB graphs are
    not held through the export, three at a time, beside the engines that run them."""

    src: Source
    out: Path
    #: scratch folder inside the staging folder (the raw export, the fused graphs, OpenVINO
    #: candidates)
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
    backbone_path: Path
    #: the CPU graph (SkipLayerNormalization unfused) without head: what int8 quantizes
    cpu_backbone_path: Path
    #: the fp32 variant's file, the CPU graph with its head, written once into the folder: fp32
    #: and bf16 run it, and it is every speed run's baseline (removed at the end when neither
    #: variant is kept)
    fp32_path: Path
    #: its operators (the manifest's ``ops``), counted when it was written
    fp32_ops: dict[str, int]
    fusion: dict[str, int]
    passes: list[str]
    #: s8 weights where this CPU's u8×s8 kernels are exact, shifted to u8 where they saturate
    #: (``runtime.cpu``); int8 is validated as the runtime will feed it
    int8_weights: str | None
    #: a rerank export: the classification head appended after the backbone, and each probe
    #: pair's query (the reference is then the probe pairs' logits)
    classifier: ClassifierHead | None = None
    probe_queries: np.ndarray | None = None
    _calib_ref: np.ndarray | None = field(default=None, repr=False)

    @property
    def max_tokens(self) -> int:
        return int(self.probe_tok.lengths.max())

    @property
    def rerank(self) -> bool:
        return self.src.task == Task.RERANK

    @property
    def out_dim(self) -> int:
        """The graph's output width: the hidden size (embed) or the number of labels (rerank)."""
        return self.classifier.num_labels if self.classifier is not None else self.hidden

    @property
    def inputs(self) -> tuple[str, ...]:
        """The graph's inputs, in feeding order."""
        return graph.inputs(self.src.token_types)

    def head(self, model: onnx.ModelProto, *, copy: bool = True) -> onnx.ModelProto:
        """``model`` with its head appended: pooling (and normalisation), or a cross-encoder's
        classification head (``copy=False``: in place, for a graph nothing else holds)."""
        return append_head(self.src, self.classifier, self.hidden, model, copy=copy)

    @staticmethod
    def load(path: Path) -> onnx.ModelProto:
        """A graph of the work folder (a fresh copy: the builder may change it in place)."""
        import onnx

        return onnx.load(str(path))

    def save(self, model: onnx.ModelProto, precision: Precision) -> Path:
        """Write ``precision``'s graph to its file in the folder, where the runtime reads it and
        the builder's engines load it from (the pipeline removes it if the variant is left out)."""
        import onnx

        path = self.out / VARIANT_FILES[precision]
        onnx.save(model, str(path))
        return path

    def fp32_runner(self) -> OnnxRuntimeRunner:
        """A session over the fp32 file (fp32's validation, the int8 search's target, the speed
        baseline), started when needed and dropped by its caller: a base-size session is about
        500 MB that no other stage should carry."""
        return OnnxRuntimeRunner(self.fp32_path, Provider.CPU)

    def baseline(self) -> Pass:
        """The fp32 speed run a variant is timed against (``export.speed``), on its own session."""
        from .speed import calibration_pass

        return calibration_pass(self, self.fp32_runner(), Provider.CPU)

    def runner(
        self, model: onnx.ModelProto | Path, provider: Provider = Provider.CPU, weights: str | None = None
    ) -> OnnxRuntimeRunner:
        """An onnxruntime session over ``model``: a file, or a graph written to the work folder
        first (a session made from bytes keeps them for its life: ``graph.ort_session``)."""
        if isinstance(model, Path):
            return OnnxRuntimeRunner(model, provider, int8_weights=weights)
        import onnx

        path = self.work / "candidate.onnx"
        onnx.save(model, str(path))
        try:
            return OnnxRuntimeRunner(path, provider, int8_weights=weights)
        finally:
            path.unlink()

    def embed(
        self,
        model: onnx.ModelProto | Path,
        tok: Tokenized | None = None,
        provider: Provider = Provider.CPU,
        weights: str | None = None,
    ) -> np.ndarray:
        """Embeddings of ``tok`` (default: the probe texts) through onnxruntime, batched as the
        runtime batches; the session is dropped on return."""
        return self.embed_runner(self.runner(model, provider, weights), tok)

    def embed_runner(self, runner: Runner, tok: Tokenized | None = None) -> np.ndarray:
        """:meth:`embed` through a runner already started (one for validation and
        :meth:`batch_figure`), in the batches the runtime uses on its provider."""
        tok = self.probe_tok if tok is None else tok
        return embed_as_runtime(runner, tok, pad_id=self.tok_info.pad_token_id, dim=self.out_dim)

    def feeds(
        self, tok: Tokenized | None = None, batch_size: int = 16, max_tokens: int = FEED_TOKENS
    ) -> list[dict[str, np.ndarray]]:
        """``tok`` (default: the calibration texts) as length-sorted padded batches of at most
        ``batch_size`` texts and ``max_tokens`` padded tokens (one text may exceed it alone), the
        backbone's input dicts (what activation statistics are gathered on: every tapped
        activation of a batch is held at once, so the token budget bounds the export's peak)."""
        tok = self.calib_tok if tok is None else tok
        out = []
        for rows in token_batches(tok.lengths, batch_size, max_tokens):
            arrays = pad(tok.ids, np.array(rows), self.tok_info.pad_token_id, tok.type_ids)
            out.append(dict(zip(self.inputs, arrays, strict=True)))
        return out

    def batch_figure(self, runner: Runner, batched: np.ndarray) -> float:
        """How far a probe text (pair) alone is from the same text inside a batch: the 8 shortest
        and the longest, each alone, against ``batched`` (the probe outputs through ``runner`` in
        the runtime's length-sorted batches) and against one batch the nine share (the short ones
        mostly padding, as a server's batch of short concurrent requests beside one long one).
        Embed: the lowest cosine; rerank: the largest |difference| of the activated scores."""
        tok = self.probe_tok
        pad_id = self.tok_info.pad_token_id
        order = np.argsort(tok.lengths, kind="stable")
        some = np.concatenate([order[:8], order[-1:]])
        alone = np.concatenate([runner.run(*pad(tok.ids, np.array([i]), pad_id, tok.type_ids)) for i in some])
        together = runner.run(*pad(tok.ids, some, pad_id, tok.type_ids))
        if self.src.rerank is not None:
            act = self.src.rerank.activation
            return max(batch_max_diff(alone, batched[some], act), batch_max_diff(alone, together, act))
        return float(min(cosines(alone, batched[some]).min(), cosines(alone, together).min()))

    def agreement(self, candidate: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Per row, how close ``candidate`` is to ``reference``: the number the int8 searches hold
        to :meth:`search_goal`. Embed: cosines; rerank: 1 − the largest |difference| of a pair's
        activated scores (``score_fidelity.score_rows``)."""
        if self.src.rerank is not None:
            return score_rows(candidate, reference, self.src.rerank.activation)
        return cosines(candidate, reference)

    def search_goal(self, precision: Precision, margin: float) -> Bar:
        """The calibration target of ``precision``'s search, stricter than its bar by ``margin``
        (the share of the bar's allowance the calibration texts may use): on cosines, or on
        :meth:`agreement`'s 1 − |Δscore| for a reranker (its ``max_abs_diff`` bar, times margin)."""
        if self.src.rerank is not None:
            floor = 1 - SCORE_BARS[precision].max_abs_diff * margin
            return Bar(min_cos=floor, mean_cos=floor)
        from .variants import target

        return target(self.bars[precision], margin)

    def calibration_reference(self) -> np.ndarray:
        """fp32 (ONNX) embeddings of the calibration texts, computed once: the searches' target."""
        if self._calib_ref is None:
            self._calib_ref = self.embed_runner(self.fp32_runner(), self.calib_tok)
        return self._calib_ref

    def fidelity(
        self, vectors: np.ndarray, precision: Precision, batch: float | None = None
    ) -> Fidelity | ScoreFidelity:
        """``vectors`` (of the probe texts, or the probe pairs' logits) against the PyTorch
        reference, at ``precision``'s bar; ``batch``: :meth:`batch_figure` of the same runner,
        recorded beside it."""
        if self.src.rerank is not None and self.probe_queries is not None:
            s = score_fidelity(
                vectors,
                self.reference,
                self.probe_queries,
                self.src.rerank.activation,
                SCORE_BARS[precision],
                self.max_tokens,
            )
            return s if batch is None else replace(s, batch_max_diff=float(f"{batch:.3g}"))
        f = fidelity(vectors, self.reference, self.bars[precision], self.max_tokens)
        return f if batch is None else replace(f, batch_min_cos=round(batch, 6))


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
    # a cross-encoder's pairs are cut as its manifest says (transformers' pair strategy)
    strategy = src.rerank.truncation if src.rerank is not None else "longest_first"
    backend.enable_truncation(src.max_length, strategy=strategy)
    backend.save(str(folder / "tokenizer.json"))
    if tok.padding_side != "right":
        log.warning("tokenizer pads on the %s; the runtime pads right", tok.padding_side)
    return TokenizerInfo(file="tokenizer.json", pad_token_id=int(tok.pad_token_id or 0))


def prepare(
    src: Source, out: Path, bars: dict[Precision, Bar], timings: dict[str, float], peaks: Peaks
) -> Context:
    """Tokenizer, reference embeddings, the TorchScript export and the fused graphs (written to
    their files), with each stage's seconds added to ``timings`` and its peak memory to ``peaks``."""
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 2)
        release()
        peaks.lap(name)
        t = now

    cpu = detect()
    log.info("export on %s", cpu.describe())
    tok_info = write_tokenizer(src, out)
    hidden = int(src.config["hidden_size"])
    heads = int(src.config["num_attention_heads"])
    if src.rerank is not None:
        probe_tok, calib_tok, reference, queries, classifier = _rerank_probes(src, out)
    else:
        probe_tok, calib_tok, reference = _probes(src, out)
        queries, classifier = None, None
    if not probe_tok.truncated:
        raise ExportError("internal: the probe set has no over-length text")
    lap("reference")

    work = out / ".work"
    work.mkdir()
    raw = work / "raw.onnx"
    with stage("export: TorchScript → ONNX"):
        graph.export_backbone(
            src.path, raw, trust_remote_code=src.trust_remote_code, token_types=src.token_types
        )
    lap("torch_export")
    with stage("fuse: ONNX Runtime's BERT fusions and graph passes"):
        fused = _fuse(src, classifier, raw, work, out, heads, hidden)
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
        calib_tok=calib_tok,
        reference=reference,
        raw_path=raw,
        backbone_path=fused.backbone,
        cpu_backbone_path=fused.cpu_backbone,
        fp32_path=fused.fp32,
        fp32_ops=fused.fp32_ops,
        fusion=fused.fusion,
        passes=fused.passes,
        int8_weights="u8" if cpu.int8_weights == "u8" else None,
        classifier=classifier,
        probe_queries=queries,
    )


def _probes(src: Source, out: Path) -> tuple[Tokenized, Tokenized, np.ndarray]:
    """The probe texts and calibration texts, tokenised, and the probe texts' PyTorch vectors."""
    tokenizer = TextTokenizer(out / "tokenizer.json", src.max_length)
    probes = probe_texts(src.max_length)
    with stage(f"reference: PyTorch embeddings of {len(probes)} probe texts"):
        reference = torch_embeddings(
            src.path,
            probes,
            src.pooling,
            src.normalize,
            src.max_length,
            trust_remote_code=src.trust_remote_code,
        )
    return tokenizer.encode(probes), tokenizer.encode(search_texts(src.max_length)), reference


def _rerank_probes(
    src: Source, out: Path
) -> tuple[Tokenized, Tokenized, np.ndarray, np.ndarray, ClassifierHead]:
    """A cross-encoder's probe pairs and calibration pairs, tokenised as the runtime will, the
    probe pairs' PyTorch logits and query indices, and its classification head's weights."""
    assert src.rerank is not None
    tokenizer = PairTokenizer(out / "tokenizer.json", src.max_length, src.rerank.truncation, src.token_types)
    pairs, queries = probe_pairs(src.max_length)
    with stage(f"reference: PyTorch logits of {len(pairs)} probe pairs"):
        reference = torch_logits(src.path, pairs, src.max_length, trust_remote_code=src.trust_remote_code)
        classifier = read_head(load_classifier(src.path, src.trust_remote_code))
    if classifier.num_labels != src.rerank.num_labels:
        raise ExportError(
            f"the head has {classifier.num_labels} outputs, config.json {src.rerank.num_labels} labels"
        )
    probe_tok = tokenizer.encode_pairs(pairs)
    calib_tok = tokenizer.encode_pairs(calibration_pairs())
    return probe_tok, calib_tok, reference, np.asarray(queries), classifier


def append_head(
    src: Source, classifier: ClassifierHead | None, hidden: int, model: onnx.ModelProto, *, copy: bool = True
) -> onnx.ModelProto:
    """The embedding head (pooling, normalisation) or a cross-encoder's classification head."""
    if classifier is not None:
        return append_classifier(model, classifier, copy=copy)
    return graph.append_head(model, src.pooling, src.normalize, hidden, copy=copy)


@dataclass(frozen=True)
class _Fused:
    backbone: Path
    cpu_backbone: Path
    fp32: Path
    fp32_ops: dict[str, int]
    fusion: dict[str, int]
    passes: list[str]


def _fuse(
    src: Source, classifier: ClassifierHead | None, raw: Path, work: Path, out: Path, heads: int, hidden: int
) -> _Fused:
    """The fused graph, its CPU form and the fp32 variant (the CPU form with its head), each
    written to its file as soon as it exists: one graph in memory, changed in place."""
    import onnx

    passes = []
    if _tabulate_buckets(raw, int(src.config.get("max_position_embeddings", 0))):
        passes.append("relative_position_buckets_table")
    model, fusion = graph.fuse(raw, heads, hidden, work)
    if src.pooling == Pooling.CLS and graph.cls_only_last_layer(model):
        passes.append("cls_only_last_layer")
    if not fusion.get("Attention"):
        # MPNet: attention with a relative-position bias, which onnxruntime's patterns miss
        n = fuse_relative_attention(model, heads)
        if n:
            fusion["Attention"] = n
            passes.append("relative_position_attention")
        else:
            log.warning(
                "ONNX Runtime did not fuse Attention for %s: the graph will be slower%s",
                src.model_type,
                graph.attention_fusion_hint(),
            )
    backbone = work / "backbone.onnx"
    onnx.save(model, str(backbone))
    # the CPU variants get SkipLayerNormalization unfused; fp16 (CUDA) keeps it (in its file)
    if graph.unfuse_skip_layernorm(model):
        passes.append("unfuse_skip_layernorm")
    cpu_backbone = work / "cpu_backbone.onnx"
    onnx.save(model, str(cpu_backbone))
    append_head(src, classifier, hidden, model, copy=False)
    fp32 = out / VARIANT_FILES[Precision.FP32]
    onnx.save(model, str(fp32))
    return _Fused(backbone, cpu_backbone, fp32, graph.op_counts(model), fusion, passes)


def _tabulate_buckets(raw: Path, positions: int) -> bool:
    """MPNet's relative-position buckets as an integer table in the raw export (every variant
    derives from it): see :mod:`.relative_buckets`. False (the file untouched) for models without."""
    import onnx

    if positions <= 0:
        return False
    model = onnx.load(str(raw))
    if not tabulate(model, positions):
        return False
    onnx.save(model, str(raw))
    return True
