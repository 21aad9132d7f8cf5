"""The manifest: one JSON file beside the ONNX variants that tells the runtime everything.

Shared by export (writes it) and runtime (reads it). Standard library only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import ModelLoadError
from .rerank_records import RerankSpec, ScoreBar, ScoreFidelity, Task
from .variant_records import EngineProperties, Int8Recipe, Speed, ValidatedCpu

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
OUTPUT_NAME = "sentence_embedding"
#: the graph's inputs, in the order the runtime feeds them (token types are all zero: not an input)
INPUT_NAMES = ("input_ids", "attention_mask")


class Pooling(str, Enum):
    """How token vectors become one sentence vector (applied inside the graph)."""

    CLS = "cls"
    MEAN = "mean"
    LAST = "last"


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    #: dynamic int8 (weights per channel, activations per batch at run time): onnxruntime's CPU kernels
    INT8 = "int8"
    #: static int8 QDQ (NNCF-calibrated activation scales) run by OpenVINO's own runtime (not
    #: onnxruntime); the export moves layers whose static scales miss the bar to int8 weights only
    INT8_OV = "int8-ov"
    #: the fp32 graph (``model.onnx``) computed in bf16 by OpenVINO's own runtime
    #: (``INFERENCE_PRECISION_HINT=bf16``): built and chosen only where the CPU computes bf16
    #: natively (AMX-bf16, AVX512-BF16), since elsewhere OpenVINO runs it in f32
    BF16 = "bf16"


class Provider(str, Enum):
    """Where a variant runs: one vocabulary for the CLI, the runtime and the manifest."""

    #: onnxruntime's CPU execution provider
    CPU = "cpu"
    #: onnxruntime's CUDA execution provider
    CUDA = "cuda"
    #: OpenVINO's own runtime (the int8-ov variant; no onnxruntime involved)
    OPENVINO = "openvino"

    @property
    def ort_name(self) -> str:
        """onnxruntime's name for this execution provider (``CPUExecutionProvider``...). For
        OPENVINO it is the name of onnxruntime's OpenVINO EP, which int8-ov no longer uses: kept
        so that name still parses."""
        return ORT_NAMES[self]

    @property
    def manifest_name(self) -> str:
        """What a manifest's ``provider`` field records: onnxruntime's execution-provider name
        for CPU and CUDA, ``openvino`` for OpenVINO's own runtime."""
        return MANIFEST_NAMES[self]

    @property
    def engine(self) -> str:
        """The inference engine that runs it: ``onnxruntime`` or ``openvino``."""
        return "openvino" if self == Provider.OPENVINO else "onnxruntime"

    @classmethod
    def parse(cls, name: str | Provider) -> Provider:
        """``cpu``/``cuda``/``openvino``, onnxruntime's ``CPUExecutionProvider``-style name, or
        ``OpenVINOExecutionProvider`` (what int8-ov entries recorded before they named OpenVINO's
        own runtime)."""
        if isinstance(name, Provider):
            return name
        for p in cls:
            if name in (p.value, p.ort_name, p.manifest_name):
                return p
        raise ValueError(f"unknown provider {name!r} (cpu, cuda or openvino)")


ORT_NAMES = {
    Provider.CPU: "CPUExecutionProvider",
    Provider.CUDA: "CUDAExecutionProvider",
    Provider.OPENVINO: "OpenVINOExecutionProvider",
}
MANIFEST_NAMES = {
    Provider.CPU: "CPUExecutionProvider",
    Provider.CUDA: "CUDAExecutionProvider",
    Provider.OPENVINO: "openvino",
}

#: file name of each variant inside an exported folder
VARIANT_FILES = {
    Precision.FP32: "model.onnx",
    Precision.FP16: "model.fp16.onnx",
    Precision.INT8: "model.int8.onnx",
    Precision.INT8_OV: "model.int8-ov.onnx",
    #: not a file of its own: OpenVINO runs fp32's graph, in bf16 (``engine_properties``)
    Precision.BF16: "model.onnx",
}
#: where each variant is built to run (the manifest records ``Provider.manifest_name``)
VARIANT_PROVIDERS = {
    Precision.FP32: Provider.CPU,
    Precision.FP16: Provider.CUDA,
    Precision.INT8: Provider.CPU,
    Precision.INT8_OV: Provider.OPENVINO,
    Precision.BF16: Provider.OPENVINO,
}


@dataclass(frozen=True)
class Bar:
    """Fidelity a variant must reach against the PyTorch reference (cosine similarity)."""

    min_cos: float
    mean_cos: float


#: the bars every export enforces (docs/export.md, "Fidelity")
BARS = {
    Precision.FP32: Bar(min_cos=0.99999, mean_cos=0.99999),
    Precision.FP16: Bar(min_cos=0.9999, mean_cos=0.9999),
    Precision.INT8: Bar(min_cos=0.99, mean_cos=0.995),
    Precision.INT8_OV: Bar(min_cos=0.99, mean_cos=0.995),
    # bf16 keeps 8 significant bits (fp16: 11), so its bar sits below fp16's and far above int8's:
    # a correct bf16 kernel stays well above it on real models, with margin for other models,
    # while a wrong one (older OpenVINO releases computed float-heavy graphs wrongly in bf16)
    # still fails it (figures: docs/performance.md, "OpenVINO")
    Precision.BF16: Bar(min_cos=0.999, mean_cos=0.9995),
}

#: the bars a rerank export enforces on its probe pairs' activated scores (docs/export.md,
#: "Reranker bars"): fp32 reproduces torch to float rounding; every lossy variant keeps the top of
#: each query's ranking (top-k agreement 1: swaps within the bar's difference are ties), reorders
#: only near-tied documents below it (Spearman 0.95: one adjacent swap of 13 documents costs 0.0055)
#: and moves no score by more than 0.03 of its (0, 1) range; the float variants only round, so they
#: are held tighter, where a wrong kernel still shows: bf16 0.02, fp16 (three more bits) 5e-3
SCORE_BARS = {
    Precision.FP32: ScoreBar(max_abs_diff=1e-4, min_spearman=0.99),
    Precision.FP16: ScoreBar(max_abs_diff=5e-3, min_spearman=0.95),
    Precision.INT8: ScoreBar(max_abs_diff=0.03, min_spearman=0.95),
    Precision.INT8_OV: ScoreBar(max_abs_diff=0.03, min_spearman=0.95),
    Precision.BF16: ScoreBar(max_abs_diff=0.02, min_spearman=0.95),
}

#: a text's vector alone against the same text inside a batch (cosine): at or above it a variant
#: counts as batch-invariant, what ``serve`` needs (it batches concurrent requests together)
INVARIANCE_BAR = 0.9999


@dataclass(frozen=True)
class Fidelity:
    """Measured agreement of a variant with the PyTorch reference on the probe set."""

    min_cos: float
    mean_cos: float
    max_abs_diff: float
    n_texts: int
    max_tokens: int
    bar_min_cos: float
    bar_mean_cos: float
    #: the lowest cosine between a probe text embedded alone and the same text inside the
    #: export's batches (None: not measured, folders exported before it was)
    batch_min_cos: float | None = None

    @property
    def passed(self) -> bool:
        return self.min_cos >= self.bar_min_cos and self.mean_cos >= self.bar_mean_cos

    @property
    def batch_invariant(self) -> bool:
        """Whether a text gets the same vector alone and in any batch (to :data:`INVARIANCE_BAR`),
        as measured at export; False when it was not measured."""
        return self.batch_min_cos is not None and self.batch_min_cos >= INVARIANCE_BAR

    @property
    def batch_measured(self) -> bool:
        return self.batch_min_cos is not None

    def describe(self) -> str:
        """One line: each figure beside its bar."""
        return (
            f"min cos {self.min_cos:.6f} (bar {self.bar_min_cos}), "
            f"mean cos {self.mean_cos:.6f} (bar {self.bar_mean_cos})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fidelity:
        optional = {"batch_min_cos"}
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d or k not in optional})


def fidelity_from_dict(d: dict[str, Any]) -> Fidelity | ScoreFidelity:
    """A variant's fidelity record: scores (``"kind": "score"``, rerank folders) or cosines."""
    return ScoreFidelity.from_dict(d) if d.get("kind") == "score" else Fidelity.from_dict(d)


@dataclass(frozen=True)
class Variant:
    """One ONNX file of the folder."""

    precision: Precision
    file: str
    sha256: str
    size_bytes: int
    #: where it is built to run; the manifest records :attr:`Provider.manifest_name`
    #: (``CPUExecutionProvider``, ``CUDAExecutionProvider``, or ``openvino`` for the variants
    #: OpenVINO's own runtime runs). Folders exported before said ``OpenVINOExecutionProvider``
    #: there, which reads as OPENVINO
    provider: Provider
    #: cosines of embeddings (an embed folder) or scores of pairs (a rerank folder)
    fidelity: Fidelity | ScoreFidelity
    #: what the export left in float, each with the measured reason. int8: whole nodes kept fp32;
    #: int8-ov: activation quantizers removed (those MatMuls keep int8 weights, run in float)
    kept_float: dict[str, str] = field(default_factory=dict)
    #: graph op counts of this file (e.g. MatMulInteger, QAttention for int8)
    ops: dict[str, int] = field(default_factory=dict)
    #: the engine the fidelity was measured on (an execution provider, or ``openvino <version> CPU``)
    validated_on: str = "CPUExecutionProvider"
    #: the CPU the fidelity was measured on
    validated_cpu: ValidatedCpu = field(default_factory=ValidatedCpu)
    #: int8-ov and bf16: the OpenVINO CPU properties the fidelity was measured with (the runtime
    #: uses them)
    engine_properties: EngineProperties = field(default_factory=EngineProperties)
    #: int8: how many INT8 tensors (weights + zero points) the file holds; the runtime checks it
    #: before shifting them to u8 on CPUs without VNNI
    int8_tensors: int = 0
    #: throughput measured at export on the export machine
    speed: Speed = field(default_factory=Speed)
    #: int8 and int8-ov: how it quantizes
    int8: Int8Recipe = field(default_factory=Int8Recipe)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision.value,
            "file": self.file,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "provider": self.provider.manifest_name,
            "fidelity": self.fidelity.to_dict(),
            "kept_float": dict(self.kept_float),
            "ops": dict(self.ops),
            "validated_on": self.validated_on,
            "validated_cpu": self.validated_cpu.to_dict(),
            "engine_properties": self.engine_properties.to_dict(),
            "int8_tensors": self.int8_tensors,
            "speed": self.speed.to_dict(),
            "int8": self.int8.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Variant:
        return cls(
            precision=Precision(d["precision"]),
            file=d["file"],
            sha256=d["sha256"],
            size_bytes=int(d["size_bytes"]),
            # old int8-ov entries named onnxruntime's OpenVINO EP: Provider.parse reads it as OPENVINO
            provider=Provider.parse(d["provider"]),
            fidelity=fidelity_from_dict(d["fidelity"]),
            # "kept_fp32" in folders exported before the rename
            kept_float=dict(d.get("kept_float", d.get("kept_fp32", {}))),
            ops=dict(d.get("ops", {})),
            validated_on=d.get("validated_on", "CPUExecutionProvider"),
            # each absent (or {}) in folders exported before it was recorded
            validated_cpu=ValidatedCpu.from_dict(d.get("validated_cpu") or {}),
            engine_properties=EngineProperties.from_dict(d.get("engine_properties") or {}),
            int8_tensors=int(d.get("int8_tensors", 0)),
            speed=Speed.from_dict(d.get("speed") or {}),
            int8=Int8Recipe.from_dict(d.get("int8") or {}),
        )


@dataclass(frozen=True)
class TokenizerInfo:
    file: str
    pad_token_id: int
    #: the side the runtime pads each batch on; the graph's pooling reads token 0 (CLS) and the
    #: mask, so the exporter writes "right" and the runtime refuses anything else
    padding_side: str = "right"


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to turn texts into embeddings with the exported folder."""

    source: dict[str, Any]
    pooling: Pooling
    normalize: bool
    max_length: int
    dim: int
    tokenizer: TokenizerInfo
    inputs: tuple[str, ...]
    output: str
    variants: dict[str, Variant]
    export: dict[str, Any]
    format_version: int = FORMAT_VERSION
    #: sentence-transformers' prompts (``config_sentence_transformers.json``): name → text put
    #: before each input; ``default_prompt_name`` applies when a call names none
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    #: the score sentence-transformers' ``similarity`` computes for this model
    similarity_fn_name: str = "cosine"
    #: Matryoshka dims the model was trained to be cut to (``export --truncate-dims``); empty: none
    truncate_dims: tuple[int, ...] = ()
    #: what the graph computes; folders written before rerank support are embed
    task: Task = Task.EMBED
    #: a rerank folder's activation, labels and pair truncation (None for embed)
    rerank: RerankSpec | None = None

    def __post_init__(self) -> None:
        if (self.task == Task.RERANK) != (self.rerank is not None):
            raise ModelLoadError(f"manifest task {self.task.value!r} with rerank={self.rerank!r}")

    def to_dict(self) -> dict[str, Any]:
        # an embed folder's manifest is written as before rerank support (no task key: embed)
        rerank = {} if self.rerank is None else {"task": self.task.value, "rerank": self.rerank.to_dict()}
        return {
            "format_version": self.format_version,
            "source": self.source,
            "pooling": self.pooling.value,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "dim": self.dim,
            "tokenizer": asdict(self.tokenizer),
            "inputs": list(self.inputs),
            "output": self.output,
            "variants": {k: v.to_dict() for k, v in self.variants.items()},
            "export": self.export,
            "prompts": self.prompts,
            "default_prompt_name": self.default_prompt_name,
            "similarity_fn_name": self.similarity_fn_name,
            "truncate_dims": list(self.truncate_dims),
        } | rerank

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        version = d.get("format_version")
        if not isinstance(version, int):
            raise ModelLoadError("manifest has no integer 'format_version'")
        if version > FORMAT_VERSION:
            raise ModelLoadError(
                f"manifest format_version {version} is newer than this dmeta-embed reads "
                f"({FORMAT_VERSION}); upgrade dmeta-embed"
            )
        try:
            return cls(
                format_version=version,
                source=dict(d["source"]),
                pooling=Pooling(d["pooling"]),
                normalize=bool(d["normalize"]),
                max_length=int(d["max_length"]),
                dim=int(d["dim"]),
                tokenizer=TokenizerInfo(**d["tokenizer"]),
                inputs=tuple(d["inputs"]),
                output=d["output"],
                variants={k: Variant.from_dict(v) for k, v in d["variants"].items()},
                export=dict(d.get("export", {})),
                # absent in manifests written before prompts were recorded
                prompts={str(k): str(v) for k, v in d.get("prompts", {}).items()},
                default_prompt_name=d.get("default_prompt_name"),
                similarity_fn_name=str(d.get("similarity_fn_name", "cosine")),
                truncate_dims=tuple(int(x) for x in d.get("truncate_dims", ())),
                # absent in manifests written before rerank support: embed
                task=Task(d.get("task", Task.EMBED.value)),
                rerank=RerankSpec.from_dict(d["rerank"]) if d.get("rerank") is not None else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ModelLoadError(f"manifest is malformed: {type(e).__name__}: {e}") from e

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", "utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        path = Path(folder) / MANIFEST_NAME
        if not path.is_file():
            raise ModelLoadError(f"{folder}: no {MANIFEST_NAME}; is this a dmeta-embed export folder?")
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"{path}: unreadable manifest ({e})") from e
        if not isinstance(data, dict):
            raise ModelLoadError(f"{path}: manifest is not a JSON object")
        return cls.from_dict(data)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
