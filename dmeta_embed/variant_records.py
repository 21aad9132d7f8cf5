"""What a manifest's variant entry records besides its file and fidelity: the speed measured at
export (:class:`Speed`), how int8 quantizes (:class:`Int8Recipe`), the CPU it was validated on
(:class:`ValidatedCpu`) and the OpenVINO properties it runs with (:class:`EngineProperties`).

Each reads every folder exported since the first release: a key an older export did not write
takes its default, and an empty record means "not measured" / "not recorded". Each writes back
what today's export writes, key for key. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

#: the OpenVINO CPU property that sets the precision of the float parts (``f32`` or ``bf16``)
PRECISION_HINT = "INFERENCE_PRECISION_HINT"


def _number(x: Any) -> float:
    """A JSON number as written (an int stays an int, so a record writes back unchanged)."""
    return x if isinstance(x, int) and not isinstance(x, bool) else float(x)


def _optional_number(x: Any) -> float | None:
    return None if x is None else _number(x)


def _optional_int(x: Any) -> int | None:
    return None if x is None else int(x)


@dataclass(frozen=True)
class Speed:
    """Throughput measured at export on the export machine, against fp32 on the same texts with
    the same session settings. ``Speed()`` (``{}`` in the manifest): not measured (fp16, a
    variant the export does not time, folders exported before speed was measured)."""

    #: the export machine's CPU class (``runtime.cpu.CpuClass`` value); "": not measured
    cpu_class: str = ""
    tokens_per_s: float = 0
    #: this variant's tokens/s over fp32's
    vs_fp32: float = 1.0
    #: the engine timed: ``onnxruntime`` or ``openvino`` ("": not recorded)
    engine: str = ""
    #: median latency of one short text per call, what a server's ``auto`` ranks by (None:
    #: folders exported before it was measured)
    query_ms: float | None = None
    #: int8-ov kept with bf16 float parts: the tokens/s it had with f32 ones
    f32_tokens_per_s: float | None = None
    #: int8-ov kept with f32 float parts although bf16 ones met the bar: bf16's tokens/s
    bf16_tokens_per_s: float | None = None

    @property
    def measured(self) -> bool:
        return bool(self.cpu_class)

    def measured_on(self, cpu_class: str) -> bool:
        """Whether the export measured it on CPUs of ``cpu_class`` (a figure from another class
        says nothing there)."""
        return self.measured and self.cpu_class == cpu_class

    def slower_than_fp32_on(self, cpu_class: str) -> bool:
        """Whether the export measured it slower than fp32 (bulk tokens/s) on ``cpu_class``."""
        return self.measured_on(cpu_class) and self.vs_fp32 < 1.0

    def figure_on(self, cpu_class: str, key: str) -> float | None:
        """``tokens_per_s`` or ``query_ms`` as measured on ``cpu_class``; None when it was not
        measured there."""
        if key not in ("tokens_per_s", "query_ms"):
            raise ValueError(f"no speed figure {key!r} (tokens_per_s or query_ms)")
        value: float | None = getattr(self, key)
        return value if self.measured_on(cpu_class) else None

    def to_dict(self) -> dict[str, Any]:
        if not self.measured:
            return {}
        d: dict[str, Any] = {
            "cpu_class": self.cpu_class,
            "tokens_per_s": self.tokens_per_s,
            "vs_fp32": self.vs_fp32,
        }
        if self.engine:
            d["engine"] = self.engine
        for key in ("query_ms", "f32_tokens_per_s", "bf16_tokens_per_s"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Speed:
        if not d.get("cpu_class"):
            return cls()
        return cls(
            cpu_class=str(d["cpu_class"]),
            tokens_per_s=_number(d.get("tokens_per_s", 0)),
            vs_fp32=_number(d.get("vs_fp32", 1.0)),
            engine=str(d.get("engine", "")),
            query_ms=_optional_number(d.get("query_ms")),
            f32_tokens_per_s=_optional_number(d.get("f32_tokens_per_s")),
            bf16_tokens_per_s=_optional_number(d.get("bf16_tokens_per_s")),
        )


class Activations(str, Enum):
    """How int8 scales its activations."""

    #: each token its own scale: a text's integers do not depend on its batch
    PER_ROW = "per-row"
    #: one scale per batch (onnxruntime's dynamic int8): folders exported before per-row
    PER_TENSOR = "per-tensor"


@dataclass(frozen=True)
class Int8Recipe:
    """How a variant quantizes. int8 records the activation scheme and weight formats it was
    built with; int8-ov only ``float_weights``; the others nothing (``Int8Recipe()``, ``{}``)."""

    #: None: not recorded (an int8 entry without it is per-tensor: exported before per-row)
    activations: Activations | None = None
    #: SmoothQuant's migration strength the per-row recipe used
    smoothing: float | None = None
    #: quantized MatMuls per weight format: ``s8`` (8-bit signed, which the runtime shifts to u8
    #: where u8×s8 kernels saturate), ``s7`` (7-bit signed, never saturates), ``u8`` (8-bit
    #: stored unsigned with zero point 128, u8×u8 kernels, exact everywhere), ``s8a7`` (8-bit s8
    #: beside 7-bit activation rows, which never saturate either)
    weights: dict[str, int] = field(default_factory=dict)
    #: MatMuls quantized with asymmetric activation rows (None: not recorded)
    asymmetric_rows: int | None = None
    #: MatMuls the search moved off the first weight format, each with the measured reason
    promoted: dict[str, str] = field(default_factory=dict)
    #: graphs the search built and scored
    trials: int | None = None
    #: int8-ov: MatMuls whose weights stayed float as well (int8 weights alone missed the bar),
    #: each with the measured reason
    float_weights: dict[str, str] = field(default_factory=dict)

    @property
    def per_row(self) -> bool:
        """Each token quantized on its own scale (batch-invariant by construction)."""
        return self.activations == Activations.PER_ROW

    @property
    def saturation_free(self) -> bool:
        """int8 whose weights no CPU's u8×s8 kernels saturate on (no 8-bit s8 weights): the
        runtime loads it as exported everywhere, with no u8 shift."""
        return bool(self.weights) and not self.weights.get("s8")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.activations is not None:
            d["activations"] = self.activations.value
        if self.smoothing is not None:
            d["smoothing"] = self.smoothing
        # part of an int8 recipe even when empty (every MatMul kept fp32, no promotion)
        if self.weights or self.activations is not None:
            d["weights"] = dict(self.weights)
        if self.asymmetric_rows is not None:
            d["asymmetric_rows"] = self.asymmetric_rows
        if self.promoted or self.activations is not None:
            d["promoted"] = dict(self.promoted)
        if self.trials is not None:
            d["trials"] = self.trials
        if self.float_weights:
            d["float_weights"] = dict(self.float_weights)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Int8Recipe:
        activations = d.get("activations")
        return cls(
            activations=None if activations is None else Activations(activations),
            smoothing=_optional_number(d.get("smoothing")),
            weights={str(k): int(v) for k, v in (d.get("weights") or {}).items()},
            asymmetric_rows=_optional_int(d.get("asymmetric_rows")),
            promoted={str(k): str(v) for k, v in (d.get("promoted") or {}).items()},
            trials=_optional_int(d.get("trials")),
            float_weights={str(k): str(v) for k, v in (d.get("float_weights") or {}).items()},
        )


@dataclass(frozen=True)
class ValidatedCpu:
    """The CPU a variant's fidelity was measured on (``runtime.cpu.CpuInfo.to_dict``).
    ``ValidatedCpu()`` (``{}``): not recorded (validated on a GPU, or folders exported before)."""

    #: ``runtime.cpu.CpuClass`` value; "": not recorded
    cpu_class: str = ""
    vendor: str = ""
    model: str = ""
    arch: str = ""
    #: how int8 weights were fed: ``s8`` as exported, ``u8`` shifted at load, ``untrusted``
    int8_weights: str = ""

    @property
    def recorded(self) -> bool:
        return self != ValidatedCpu()

    def to_dict(self) -> dict[str, str]:
        if not self.recorded:
            return {}
        return {
            "cpu_class": self.cpu_class,
            "vendor": self.vendor,
            "model": self.model,
            "arch": self.arch,
            "int8_weights": self.int8_weights,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidatedCpu:
        return cls(**{k: str(d.get(k, "")) for k in cls.__dataclass_fields__})


class InferencePrecision(str, Enum):
    """What OpenVINO computes a variant's float parts in (``INFERENCE_PRECISION_HINT``)."""

    F32 = "f32"
    #: only where the CPU computes bf16 natively (elsewhere OpenVINO runs it in f32)
    BF16 = "bf16"


@dataclass(frozen=True)
class EngineProperties:
    """The OpenVINO CPU properties a variant was validated with, which the runtime compiles it
    with. ``EngineProperties()`` (``{}``): none (the onnxruntime variants)."""

    #: ``INFERENCE_PRECISION_HINT``; None: not set
    precision_hint: InferencePrecision | None = None
    #: any other property a manifest names, as written, in order (the export writes none)
    other: tuple[tuple[str, str], ...] = ()

    @property
    def bf16(self) -> bool:
        return self.precision_hint == InferencePrecision.BF16

    def with_precision_hint(self, hint: InferencePrecision) -> EngineProperties:
        return replace(self, precision_hint=hint)

    def config(self) -> dict[str, str]:
        """The plain property → value dict OpenVINO's CPU plugin (``OpenVINORunner``) takes."""
        hint = {PRECISION_HINT: self.precision_hint.value} if self.precision_hint is not None else {}
        return hint | dict(self.other)

    def to_dict(self) -> dict[str, str]:
        return self.config()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineProperties:
        hint = d.get(PRECISION_HINT)
        return cls(
            precision_hint=None if hint is None else InferencePrecision(hint),
            other=tuple((str(k), str(v)) for k, v in d.items() if k != PRECISION_HINT),
        )
