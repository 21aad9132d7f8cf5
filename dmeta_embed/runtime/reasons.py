"""What :func:`~dmeta_embed.runtime.choice.choose` decided, as data, and the words for it.

A :class:`Choice` records why its variant runs (:class:`Basis`), which variants were set aside and
why (:class:`Objection`, :class:`Why`), how int8 weights are fed (:class:`Int8Feed`) and where bf16
runs (:class:`Bf16`). Its ``reason`` and ``warning`` are generated from those fields, so tests,
``dmeta-embed inspect`` and the corpus workers read the decision, not its wording; ``to_dict`` /
``from_dict`` carry it as JSON (enums as their values). Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..manifest import INVARIANCE_BAR, Precision, Provider
from ..rerank_records import SCORE_INVARIANCE_BAR
from .cpu import CpuClass


class Basis(str, Enum):
    """Why the chosen variant is the one that runs."""

    #: named by the caller (``variant=``)
    ASKED_FOR = "asked-for"
    #: CUDA is available: fp16, else fp32, is the fastest there
    CUDA_FASTEST = "cuda-fastest"
    #: the export measured every candidate on this CPU class: the highest throughput
    FASTEST_MEASURED = "fastest-measured"
    #: a server (``prefer_latency``): the lowest one-text latency the export measured on this class
    LOWEST_LATENCY = "lowest-latency"
    #: no speed measured on this class for every candidate: the class's built-in order
    BUILT_IN_ORDER = "built-in-order"
    #: every other variant of the folder was set aside (or is not runnable here)
    ONLY_ONE_LEFT = "only-one-left"
    #: a server, and the folder predates one-text latency: onnxruntime's int8 first
    INT8_FIRST_FOR_REQUESTS = "int8-first-for-requests"
    #: ``provider='openvino'``, ``variant='auto'``: the OpenVINO variant measured fastest on this class
    OPENVINO_FASTEST_MEASURED = "openvino-fastest-measured"
    #: ``provider='openvino'``, ``variant='auto'``, unmeasured: bf16 first where bf16 is native
    OPENVINO_ORDER = "openvino-order"


class Why(str, Enum):
    """Why a variant was set aside, or why one asked for by name may not give its validated vectors."""

    #: it missed its fidelity bar at export
    MISSED_BAR = "missed-bar"
    #: bf16 on a CPU without native bf16: OpenVINO would run the graph in f32
    NO_NATIVE_BF16 = "no-native-bf16"
    #: int8 on a CPU whose int8 kernels are unknown (class ``unknown``)
    INT8_KERNELS_UNKNOWN = "int8-kernels-unknown"
    #: int8 with one activation scale per batch: a text's vector depends on its batch-mates
    PER_TENSOR_INT8 = "per-tensor-int8"
    #: bf16 whose export did not measure a text alone vs inside a batch
    BATCH_UNMEASURED = "batch-unmeasured"
    #: the export measured a text alone vs inside a batch below the invariance bar
    NOT_BATCH_INVARIANT = "not-batch-invariant"
    #: measured slower than fp32 (bulk throughput) on this CPU class
    SLOWER_THAN_FP32 = "slower-than-fp32"
    #: a server: answered one text no sooner than fp32 on this CPU class
    SLOWER_ONE_TEXT = "slower-one-text"
    #: an onnxruntime variant, and onnxruntime is not installed
    ONNXRUNTIME_MISSING = "onnxruntime-missing"


#: the objections that make a variant wrong for a server batching concurrent requests
BATCH_DEPENDENT = frozenset({Why.PER_TENSOR_INT8, Why.BATCH_UNMEASURED, Why.NOT_BATCH_INVARIANT})


class Int8Feed(str, Enum):
    """How the int8 file's weights are fed to onnxruntime on this CPU."""

    #: s8 weights as exported: this CPU's u8×s8 kernels accumulate in int32 (exact)
    AS_EXPORTED = "as-exported"
    #: s8 weights shifted to u8 at load: this CPU's u8×s8 kernels saturate, its u8×u8 do not (exact)
    SHIFTED_TO_U8 = "shifted-to-u8"
    #: no 8-bit s8 weights (7-bit or u8): exact as exported on every CPU, no shift
    SATURATION_FREE = "saturation-free"
    #: as exported, on a CPU whose int8 kernels are unknown: results may differ
    KERNELS_UNKNOWN = "kernels-unknown"

    @property
    def weights(self) -> str:
        """The weight format onnxruntime gets: ``"u8"`` when shifted, else ``"s8"``."""
        return "u8" if self == Int8Feed.SHIFTED_TO_U8 else "s8"


class Bf16(str, Enum):
    """Where the export chose bf16 (bf16, or int8-ov's float parts): how it runs on this CPU."""

    #: computed in bf16: this CPU has native bf16
    NATIVE = "native"
    #: computed in f32: no native bf16 here (OpenVINO would emulate it, or fall back)
    IN_F32 = "in-f32"


def _f(x: float | None, spec: str) -> str:
    return "?" if x is None else format(x, spec)


@dataclass(frozen=True)
class Objection:
    """One reason against ``variant``, with the figures it rests on (only those its ``why`` uses
    are set). ``str()`` is the sentence the reason and the warning quote."""

    variant: Precision
    why: Why
    #: the CPU class the objection holds on (this CPU's)
    cpu_class: CpuClass | None = None
    #: missed-bar: the export's min and mean cosine against the reference, and their bars
    min_cos: float | None = None
    bar_min_cos: float | None = None
    mean_cos: float | None = None
    bar_mean_cos: float | None = None
    #: not-batch-invariant: the lowest cosine of a text alone vs inside a batch at export
    batch_min_cos: float | None = None
    #: a reranker's missed bar: the export's largest score difference and lowest Spearman, with
    #: their bars; not batch-invariant: the largest score difference of a pair alone vs batched
    max_score_diff: float | None = None
    bar_max_score_diff: float | None = None
    min_spearman: float | None = None
    bar_min_spearman: float | None = None
    batch_max_diff: float | None = None
    #: slower-than-fp32: the export's bulk throughput as a multiple of fp32's
    vs_fp32: float | None = None
    #: slower-one-text: the variant's and fp32's one-text latency at export, in ms
    query_ms: float | None = None
    fp32_query_ms: float | None = None

    def __str__(self) -> str:
        v, cls = self.variant.value, self.cpu_class.value if self.cpu_class else "this CPU's class"
        w = self.why
        if w == Why.MISSED_BAR and self.max_score_diff is not None:
            return (
                f"{v} missed its score fidelity bar at export (max |Δscore| {_f(self.max_score_diff, '.2e')}, "
                f"bar {_f(self.bar_max_score_diff, '')}; min Spearman {_f(self.min_spearman, '.4f')}, "
                f"bar {_f(self.bar_min_spearman, '')})"
            )
        if w == Why.MISSED_BAR:
            return (
                f"{v} missed its fidelity bar at export (min cos {_f(self.min_cos, '.6f')}, "
                f"bar {_f(self.bar_min_cos, '')}; mean cos {_f(self.mean_cos, '.6f')}, "
                f"bar {_f(self.bar_mean_cos, '')})"
            )
        if w == Why.NO_NATIVE_BF16:
            return (
                f"{v}: this CPU has no native bf16 (class {cls}), so OpenVINO runs the graph in f32, "
                "not at the speed measured at export"
            )
        if w == Why.INT8_KERNELS_UNKNOWN:
            return (
                f"{v}: this CPU's int8 kernels are unknown (class {cls}), "
                "so its vectors may differ from the validated ones"
            )
        if w == Why.PER_TENSOR_INT8:
            return (
                f"{v} is not batch-invariant: it quantizes activations per tensor (one scale for the "
                "whole batch), so a text's vector depends on the texts batched with it"
            )
        if w == Why.BATCH_UNMEASURED:
            return (
                f"{v} is not known to be batch-invariant: this folder's export did not measure a text "
                "alone vs inside a batch, and bf16 rounding depends on the batch shape"
            )
        if w == Why.NOT_BATCH_INVARIANT and self.batch_max_diff is not None:
            return (
                f"{v} is not batch-invariant: a pair alone vs inside a batch moved its score by "
                f"{_f(self.batch_max_diff, '.2e')} at export (bar {SCORE_INVARIANCE_BAR})"
            )
        if w == Why.NOT_BATCH_INVARIANT:
            return (
                f"{v} is not batch-invariant: a text alone vs inside a batch gave min cos "
                f"{_f(self.batch_min_cos, '.6f')} at export (bar {INVARIANCE_BAR})"
            )
        if w == Why.SLOWER_THAN_FP32:
            return f"{v} was measured slower than fp32 on {cls} ({_f(self.vs_fp32, '.3g')}x)"
        if w == Why.SLOWER_ONE_TEXT:
            return (
                f"{v} answered one text no sooner than fp32 on {cls} "
                f"({_f(self.query_ms, '.1f')} against {_f(self.fp32_query_ms, '.1f')} ms)"
            )
        return f"{v}: onnxruntime is not installed"  # Why.ONNXRUNTIME_MISSING

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: enums as their values, figures that do not apply left out."""
        d: dict[str, Any] = {"variant": self.variant.value, "why": self.why.value}
        if self.cpu_class is not None:
            d["cpu_class"] = self.cpu_class.value
        for name in _FIGURES:
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Objection:
        return cls(
            Precision(d["variant"]),
            Why(d["why"]),
            CpuClass(d["cpu_class"]) if d.get("cpu_class") is not None else None,
            **{name: float(d[name]) for name in _FIGURES if d.get(name) is not None},
        )


_FIGURES = (
    "min_cos",
    "bar_min_cos",
    "mean_cos",
    "bar_mean_cos",
    "batch_min_cos",
    "max_score_diff",
    "bar_max_score_diff",
    "min_spearman",
    "bar_min_spearman",
    "batch_max_diff",
    "vs_fp32",
    "query_ms",
    "fp32_query_ms",
)

_INT8_FEED_WORDS = {
    Int8Feed.AS_EXPORTED: "s8 weights run as exported (exact)",
    Int8Feed.SHIFTED_TO_U8: "weights shifted to u8 at load (exact)",
    Int8Feed.SATURATION_FREE: "7-bit or u8 weights, exact here as exported (no shift)",
    Int8Feed.KERNELS_UNKNOWN: "its int8 kernels are unknown, results may differ from the validated ones",
}


def _basis_words(c: Choice) -> str:
    cls, b = c.cpu_class.value, c.basis
    if b == Basis.ASKED_FOR:
        return "asked for"
    if b == Basis.CUDA_FASTEST:
        return f"CUDA is available and {c.variant.value} is the fastest there"
    if b == Basis.FASTEST_MEASURED:
        return f"fastest measured at export on {cls}"
    if b == Basis.LOWEST_LATENCY:
        return (
            f"single short requests: lowest one-text latency measured at export on {cls} "
            f"({_f(c.query_ms, '.1f')} ms)"
        )
    if b == Basis.BUILT_IN_ORDER:
        return f"first in the built-in order for {cls} (the export measured no speed on {cls})"
    if b == Basis.ONLY_ONE_LEFT:
        return "the only variant left"
    if b == Basis.INT8_FIRST_FOR_REQUESTS:
        return "single short requests: onnxruntime's int8 first (OpenVINO recompiles per input shape)"
    if b == Basis.OPENVINO_FASTEST_MEASURED:
        return f"provider 'openvino' asked for: its variant measured fastest at export on {cls}"
    # Basis.OPENVINO_ORDER
    return "provider 'openvino' asked for: its first variant in the order for this CPU (bf16 where native)"


def _reason(c: Choice) -> str:
    """The one line ``inspect`` and the load log print: the basis, what was set aside, then how
    the variant runs here."""
    out = _basis_words(c)
    if c.set_aside:
        out += f" ({'; '.join(map(str, c.set_aside))})"
    validated = f"validated on {c.validated_class}" if c.validated_class else "validated"
    if c.int8_feed is not None:
        out += f"; {c.variant.value} {validated}; this CPU is {c.cpu_class.value}: "
        out += _INT8_FEED_WORDS[c.int8_feed]
    elif c.provider == Provider.OPENVINO:
        out += f"; {c.variant.value} {validated}, this CPU is {c.cpu_class.value}"
    if c.bf16 is not None:
        part = "graph" if c.variant == Precision.BF16 else "float parts"
        if c.bf16 == Bf16.NATIVE:
            out += f"; {part} in bf16 (native on this CPU)"
        else:
            out += f"; {part} in f32: bf16 was chosen at export, this CPU has no native bf16"
    return out


@dataclass(frozen=True)
class Choice:
    """What to load: the variant, where it runs, how, and why. ``int8_weights``, ``reason`` and
    ``warning`` follow from the other fields."""

    variant: Precision
    provider: Provider
    #: why this variant
    basis: Basis
    #: the class of the CPU this was decided for
    cpu_class: CpuClass
    #: int8-ov and bf16: the OpenVINO CPU properties to compile with (the manifest's, bf16 only
    #: where native)
    engine_properties: dict[str, str] = field(default_factory=dict)
    #: the folder's variants ``auto`` passed over before ranking, each with why (one entry per
    #: objection: a variant may have two)
    set_aside: tuple[Objection, ...] = ()
    #: asked for by name: why this variant may not give the validated vectors (``auto`` never
    #: chooses such a variant); None when it will
    caveat: Objection | None = None
    #: int8 on the CPU provider: how its weights are fed; else None
    int8_feed: Int8Feed | None = None
    #: where the export chose bf16: whether it runs natively here; else None
    bf16: Bf16 | None = None
    #: the CPU class the variant was validated on at export (int8 and OpenVINO variants)
    validated_class: str | None = None
    #: :attr:`Basis.LOWEST_LATENCY`: the chosen variant's one-text latency at export, in ms
    query_ms: float | None = None
    #: int8 on CPU: ``"s8"`` (the file as exported) or ``"u8"`` (weights shifted at load); else None
    int8_weights: str | None = field(init=False)
    #: the decision in one line (generated)
    reason: str = field(init=False)
    #: the caveat in one line for the log ("" when none): the Embedder logs it as a warning
    warning: str = field(init=False)

    def __post_init__(self) -> None:
        weights = None if self.int8_feed is None else self.int8_feed.weights
        object.__setattr__(self, "int8_weights", weights)
        object.__setattr__(self, "reason", _reason(self))
        caveat = "" if self.caveat is None else f"{self.caveat}; loaded because it was asked for by name"
        object.__setattr__(self, "warning", caveat)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (enums as their values), with the generated words beside the data."""
        return {
            "variant": self.variant.value,
            "provider": self.provider.value,
            "basis": self.basis.value,
            "cpu_class": self.cpu_class.value,
            "engine_properties": dict(self.engine_properties),
            "set_aside": [o.to_dict() for o in self.set_aside],
            "caveat": None if self.caveat is None else self.caveat.to_dict(),
            "int8_feed": None if self.int8_feed is None else self.int8_feed.value,
            "bf16": None if self.bf16 is None else self.bf16.value,
            "validated_class": self.validated_class,
            "query_ms": self.query_ms,
            "int8_weights": self.int8_weights,
            "reason": self.reason,
            "warning": self.warning,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Choice:
        """The inverse of :meth:`to_dict`; the words are generated again, not read."""
        return cls(
            variant=Precision(d["variant"]),
            provider=Provider(d["provider"]),
            basis=Basis(d["basis"]),
            cpu_class=CpuClass(d["cpu_class"]),
            engine_properties=dict(d.get("engine_properties") or {}),
            set_aside=tuple(Objection.from_dict(o) for o in d.get("set_aside") or ()),
            caveat=Objection.from_dict(d["caveat"]) if d.get("caveat") else None,
            int8_feed=Int8Feed(d["int8_feed"]) if d.get("int8_feed") else None,
            bf16=Bf16(d["bf16"]) if d.get("bf16") else None,
            validated_class=d.get("validated_class"),
            query_ms=float(d["query_ms"]) if d.get("query_ms") is not None else None,
        )
