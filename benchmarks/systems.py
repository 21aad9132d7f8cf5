"""What a benchmark compares: :class:`System` (plain data: what it is, which adapter runs it, what
it needs installed), the :class:`Context` every adapter gets, the adapter interface, and the
catalogue of our variants and the peers (the adapters themselves live in ``benchmarks.peers``).

Every adapter has the same small interface — ``prepare()`` (one-time files, cached), ``load()``,
``encode(texts) -> (n, dim) float32`` — and imports its library inside ``load``/``prepare``, so a
peer that is not installed becomes a "skipped: …" row instead of an error.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

INSTALL_HINT = "pip install 'dmeta-embed[bench]'"


class Unavailable(Exception):
    """The system cannot run here (library missing, model format refused…): a skipped row."""


@dataclass(frozen=True)
class System:
    key: str  # unique id, also the file stem of its outputs
    name: str  # the library users would install
    variant: str  # what is being run: precision, export preset
    engine: str  # what executes the graph
    precision: str  # fp32 | fp16 | bf16 | int8: picks the peak used for "share of peak"
    adapter: str  # "module:Class"
    options: dict[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()  # importable modules; a missing one skips the system
    ours: bool = False
    note: str = ""
    #: a CPU feature the system needs in hardware (``"bf16"``): without it the library emulates
    #: it at a cost no user would pick, so the row is skipped with the reason
    cpu_feature: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["requires"] = list(self.requires)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> System:
        # results recorded before every system ran in this environment carry a "python" field
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "requires": tuple(d.get("requires", ()))})

    @property
    def stem(self) -> str:
        """The key as a file name stem: the worker saves embeddings under it, the parent reads them."""
        return self.key.replace(":", "_").replace("/", "_")

    def missing(self) -> list[str]:
        """Required modules that cannot be imported here."""
        out = []
        for mod in self.requires:
            try:
                found = importlib.util.find_spec(mod) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                out.append(mod)
        return out

    def unsupported(self) -> str:
        """Why this CPU cannot run the system as its users would ("" when it can)."""
        if self.cpu_feature == "bf16":
            from dmeta_embed.runtime.cpu import detect

            cpu = detect()
            if not cpu.bf16:
                return f"no native bf16 on this CPU ({cpu.cpu_class.value}): torch would emulate it"
        return ""


@dataclass(frozen=True)
class Context:
    """What every adapter may use: the exported folder (ours), the HF folder (peers), settings."""

    export_dir: Path
    source_dir: Path
    cache_dir: Path  # prepared peer files live in subfolders of this
    threads: int
    batch_size: int
    max_length: int
    pooling: str  # cls | mean | last
    normalize: bool
    dim: int

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Context:
        paths = {"export_dir", "source_dir", "cache_dir"}
        return cls(**{k: Path(v) if k in paths else v for k, v in d.items()})


class Adapter:
    """Base: no preparation. Subclasses set ``self._encode`` in ``load``."""

    def __init__(self, ctx: Context, **options: Any) -> None:
        self.ctx = ctx
        self.options = options
        self.info: dict[str, Any] = {}

    @classmethod
    def is_prepared(cls, ctx: Context, **options: Any) -> bool:
        return True

    def prepare(self) -> dict[str, Any]:
        return {}

    def load(self) -> None:
        raise NotImplementedError

    def encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


def adapter_class(system: System) -> type[Adapter]:
    """The class ``system.adapter`` ("module:Class") names, its module imported."""
    module, _, cls_name = system.adapter.partition(":")
    return getattr(importlib.import_module(module), cls_name)  # type: ignore[no-any-return]


def make_adapter(system: System, ctx: Context) -> Adapter:
    return adapter_class(system)(ctx, **system.options)


# --- the catalogue ----------------------------------------------------------------------------------

_RT = ("onnxruntime", "tokenizers")
_TORCH = ("torch", "transformers")


def our_systems(variants: list[str]) -> list[System]:
    out = []
    for v in variants:
        ov = v in ("int8-ov", "bf16")  # the variants OpenVINO's own runtime runs
        out.append(
            System(
                key=f"dmeta-embed:{v}",
                name="dmeta-embed",
                variant=v,
                engine="OpenVINO CPU" if ov else "ONNX Runtime CPU",
                precision="int8" if v == "int8-ov" else v,
                adapter="benchmarks.peers:Ours",
                options={"variant": v},
                requires=_RT + ("openvino",) if ov else _RT,
                ours=True,
                note="fp16 is built for CUDA; on CPU it is shown for completeness" if v == "fp16" else "",
            )
        )
    return out


def qint8_config() -> str:
    """The ``export_dynamic_quantized_onnx_model`` preset a user of this CPU class would pick
    (optimum's presets: arm64, avx2, avx512, avx512_vnni; AMX runs the avx512_vnni one)."""
    from dmeta_embed.runtime.cpu import CpuClass, detect

    return {
        CpuClass.AMX: "avx512_vnni",
        CpuClass.AVX512_VNNI: "avx512_vnni",
        CpuClass.AVX512: "avx512",
        CpuClass.ARM64: "arm64",
    }.get(detect().cpu_class, "avx2")


def peer_systems() -> list[System]:
    st = ("sentence_transformers",)
    return [
        System(
            "torch:fp32",
            "transformers + torch",
            "fp32",
            "PyTorch CPU",
            "fp32",
            "benchmarks.peers:TorchHF",
            {"dtype": "fp32"},
            _TORCH,
        ),
        System(
            "torch:bf16",
            "transformers + torch",
            "bf16 (weights cast once)",
            "PyTorch CPU (oneDNN)",
            "bf16",
            "benchmarks.peers:TorchHF",
            {"dtype": "bf16"},
            _TORCH,
            cpu_feature="bf16",
        ),
        System(
            "st:torch",
            "sentence-transformers",
            "torch fp32",
            "PyTorch CPU",
            "fp32",
            "benchmarks.peers:SentenceTransformers",
            {"backend": "torch"},
            st + _TORCH,
        ),
        System(
            "st:onnx",
            "sentence-transformers",
            "backend=onnx fp32",
            "ONNX Runtime CPU",
            "fp32",
            "benchmarks.peers:SentenceTransformers",
            {"backend": "onnx"},
            st + ("optimum.onnxruntime",),
        ),
        System(
            "st:onnx-O3",
            "sentence-transformers",
            "backend=onnx O3",
            "ONNX Runtime CPU",
            "fp32",
            "benchmarks.peers:SentenceTransformers",
            {"backend": "onnx", "export": "O3"},
            st + ("optimum.onnxruntime",),
            note="O3 approximates GELU",
        ),
        System(
            "st:onnx-qint8",
            "sentence-transformers",
            f"backend=onnx dynamic int8 ({qint8_config()} preset)",
            "ONNX Runtime CPU",
            "int8",
            "benchmarks.peers:SentenceTransformers",
            {"backend": "onnx", "export": "qint8"},
            st + ("optimum.onnxruntime",),
            note="dynamic int8, all MatMuls",
        ),
        System(
            "st:openvino",
            "sentence-transformers",
            "backend=openvino (fp32 IR)",
            "OpenVINO CPU",
            "bf16",
            "benchmarks.peers:SentenceTransformers",
            {"backend": "openvino"},
            st + ("optimum.intel", "openvino"),
            note="OpenVINO runs an fp32 IR in bf16 by default on CPUs with AMX (see info)",
        ),
        System(
            "st:openvino-qint8",
            "sentence-transformers",
            "backend=openvino static int8 (NNCF)",
            "OpenVINO CPU",
            "int8",
            "benchmarks.peers:SentenceTransformers",
            {"backend": "openvino", "export": "qint8"},
            st + ("optimum.intel", "openvino", "nncf"),
            note="calibrated on 300 built-in texts (offline)",
        ),
        System(
            "optimum:ort",
            "optimum",
            "ORTModelForFeatureExtraction fp32",
            "ONNX Runtime CPU",
            "fp32",
            "benchmarks.peers:OptimumORT",
            {},
            ("optimum.onnxruntime", "transformers"),
        ),
        System(
            "fastembed:fp32",
            "fastembed",
            "our model.onnx (fp32)",
            "ONNX Runtime CPU",
            "fp32",
            "benchmarks.peers:FastEmbed",
            {"variant": "fp32"},
            ("fastembed",),
            note="texts pre-sorted by length by the harness",
        ),
    ]
