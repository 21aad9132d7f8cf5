"""Which variant of a folder to run, on which provider, and why: one pure function of facts.

The facts are the manifest (which variants passed their fidelity bar, where each was validated and
how fast it was there), this CPU (:class:`~dmeta_embed.runtime.cpu.CpuInfo`) and the providers
installed. Everything is passed in, so every CPU class can be tested on any machine. The decision
comes back as data (:class:`~dmeta_embed.runtime.reasons.Choice`), its words generated from it.
"""

from __future__ import annotations

from dataclasses import replace

from .._optional import EXTRAS, NOTES
from ..errors import MissingDependencyError, ProviderError
from ..manifest import Fidelity, Manifest, Precision, Provider
from .cpu import CpuClass, CpuInfo
from .installed import Installed
from .reasons import BATCH_DEPENDENT, Basis, Bf16, Choice, Int8Feed, Objection, Why

__all__ = [
    "BATCH_DEPENDENT",
    "CPU_ORDER",
    "Basis",
    "Bf16",
    "Choice",
    "Int8Feed",
    "NothingToLoadError",
    "Objection",
    "Why",
    "batch_invariance_problem",
    "choose",
]

#: ``auto``'s CPU order by class when the export measured no speed on this class (a folder
#: exported on another machine). On AMX bf16 (the fp32 graph on OpenVINO in bf16) leads: on real
#: MiniLM and MPNet it outran int8-ov (which real weights leave weights-only) and, by more,
#: onnxruntime's int8. On AVX-512 VNNI (AMD Zen 4) int8-ov with int8 weights throughout led bf16
#: on most real-weight workloads and outran onnxruntime's int8 on all of them (where the export
#: keeps most weights float, as on real MPNet, it runs at bf16's speed). The figures:
#: docs/performance.md, "AMX" and "AVX-512 VNNI".
#: On AVX2 int8-ov was measured slower than fp32, so elsewhere it waits for an export-time
#: measurement on that class; bf16 likewise
CPU_ORDER: dict[CpuClass, tuple[Precision, ...]] = {
    CpuClass.AMX: (Precision.BF16, Precision.INT8_OV, Precision.INT8, Precision.FP32),
    CpuClass.AVX512_VNNI: (Precision.INT8_OV, Precision.BF16, Precision.INT8, Precision.FP32),
}
#: the variants validated on OpenVINO's own runtime (the others run on onnxruntime)
OPENVINO_VARIANTS = (Precision.INT8_OV, Precision.BF16)
DEFAULT_CPU_ORDER = (Precision.INT8, Precision.FP32)
#: the OpenVINO CPU property that sets the float parts' precision (``f32`` or ``bf16``)
PRECISION_HINT = "INFERENCE_PRECISION_HINT"


class NothingToLoadError(ProviderError):
    """``auto`` found no variant of the folder to load here. ``set_aside``: every variant it passed
    over and why; ``by_name``: those that would load if asked for by name (they would not give
    their validated vectors here)."""

    def __init__(
        self, message: str, set_aside: tuple[Objection, ...], by_name: tuple[Precision, ...] = ()
    ) -> None:
        super().__init__(message)
        self.set_aside, self.by_name = set_aside, by_name


def batch_invariance_problem(manifest: Manifest, variant: Precision) -> Objection | None:
    """Why ``variant`` may give a text another vector inside a batch than alone (None when it does
    not): a server batches concurrent requests, so there its answer would depend on its neighbours.

    The export's measurement (``Fidelity.batch_min_cos``) decides when it is there; int8 with one
    activation scale per batch (``Variant.int8.activations`` not ``per-row``; folders without
    the field are per-tensor) is never invariant, measured or not: the export's batches are a few,
    a server's are any. Unmeasured, fp32, fp16 and int8-ov (static scales) count as invariant;
    bf16 does not: OpenVINO's bf16 rounding follows the batch shape, and on real
    all-mpnet-base-v2 a text alone vs in a batch fell below the bar (docs/serving.md, "Batch
    invariance")."""
    v = manifest.variants[variant.value]
    if variant == Precision.INT8 and not v.int8.per_row:
        return Objection(variant, Why.PER_TENSOR_INT8)
    f = v.fidelity
    if not f.batch_measured and variant == Precision.BF16:
        return Objection(variant, Why.BATCH_UNMEASURED)
    if f.batch_measured and not f.batch_invariant:
        if isinstance(f, Fidelity):
            return Objection(variant, Why.NOT_BATCH_INVARIANT, batch_min_cos=f.batch_min_cos)
        return Objection(variant, Why.NOT_BATCH_INVARIANT, batch_max_diff=f.batch_max_diff)
    return None


def _caveat(manifest: Manifest, variant: Precision, cpu: CpuInfo, batched: bool = False) -> Objection | None:
    """Why ``variant`` would not reproduce its validated vectors here: it missed its bar, it is
    int8 and this CPU's int8 kernels are unknown, or ``batched`` (a server merging concurrent
    requests) and it is not batch-invariant (None when none)."""
    v = manifest.variants[variant.value]
    f = v.fidelity
    if not f.passed and isinstance(f, Fidelity):
        return Objection(
            variant,
            Why.MISSED_BAR,
            min_cos=f.min_cos,
            bar_min_cos=f.bar_min_cos,
            mean_cos=f.mean_cos,
            bar_mean_cos=f.bar_mean_cos,
        )
    if not f.passed and not isinstance(f, Fidelity):  # a reranker's scores
        return Objection(
            variant,
            Why.MISSED_BAR,
            max_score_diff=f.max_abs_diff,
            bar_max_score_diff=f.bar_max_abs_diff,
            min_spearman=f.min_spearman,
            bar_min_spearman=f.bar_min_spearman,
        )
    if variant == Precision.BF16 and not cpu.bf16:
        # OpenVINO compiles the bf16 hint as f32 here: fp32's vectors, not the speed measured
        return Objection(variant, Why.NO_NATIVE_BF16, cpu.cpu_class)
    if variant == Precision.INT8 and cpu.int8_weights is None:
        return Objection(variant, Why.INT8_KERNELS_UNKNOWN, cpu.cpu_class)
    return batch_invariance_problem(manifest, variant) if batched else None


def _named(choice: Choice, manifest: Manifest, cpu: CpuInfo, batched: bool) -> Choice:
    """An explicitly asked-for choice, with the caveat its variant deserves."""
    return replace(choice, caveat=_caveat(manifest, choice.variant, cpu, batched))


def _validated(manifest: Manifest, variant: Precision) -> str | None:
    """The CPU class ``variant`` was validated on at export (None when the manifest does not say)."""
    cpu = manifest.variants[variant.value].validated_cpu
    return cpu.cpu_class or None


def _openvino_choice(
    manifest: Manifest,
    cpu: CpuInfo,
    basis: Basis,
    variant: Precision = Precision.INT8_OV,
    set_aside: tuple[Objection, ...] = (),
) -> Choice:
    """``variant`` (int8-ov or bf16) on OpenVINO with the properties it was validated with; bf16
    only where this CPU computes bf16 natively (elsewhere OpenVINO would emulate it or fall back):
    f32 otherwise, said in ``Choice.bf16``."""
    props = manifest.variants[variant.value].engine_properties.config()
    bf16 = None
    if props.get(PRECISION_HINT) == "bf16":
        if cpu.bf16:
            bf16 = Bf16.NATIVE
        else:
            props[PRECISION_HINT] = "f32"
            bf16 = Bf16.IN_F32
    return Choice(
        variant,
        Provider.OPENVINO,
        basis,
        cpu.cpu_class,
        props,
        set_aside,
        bf16=bf16,
        validated_class=_validated(manifest, variant),
    )


def _cpu_choice(
    manifest: Manifest,
    variant: Precision,
    cpu: CpuInfo,
    basis: Basis,
    set_aside: tuple[Objection, ...] = (),
    query_ms: float | None = None,
) -> Choice:
    """``variant`` on the CPU provider, with the int8 weight format this CPU computes exactly."""
    if variant != Precision.INT8:
        return Choice(variant, Provider.CPU, basis, cpu.cpu_class, set_aside=set_aside, query_ms=query_ms)
    weights = cpu.int8_weights
    if weights == "u8" and manifest.variants[variant.value].int8.saturation_free:
        feed = Int8Feed.SATURATION_FREE
    elif weights == "u8":
        feed = Int8Feed.SHIFTED_TO_U8
    elif weights == "s8":
        feed = Int8Feed.AS_EXPORTED
    else:
        feed = Int8Feed.KERNELS_UNKNOWN
    return Choice(
        variant,
        Provider.CPU,
        basis,
        cpu.cpu_class,
        set_aside=set_aside,
        int8_feed=feed,
        validated_class=_validated(manifest, variant),
        query_ms=query_ms,
    )


def choose(
    manifest: Manifest,
    variant: str = "auto",
    provider: str = "auto",
    *,
    cpu: CpuInfo,
    installed: Installed,
    prefer_latency: bool = False,
    batched_requests: bool = False,
) -> Choice:
    """The variant and provider to load for ``variant``/``provider`` (``auto`` or a name).

    Explicit requests are honoured or refused with a :class:`ProviderError`, never replaced.
    ``auto``: fp16 (else fp32) on CUDA when it is installed; on CPU the fastest variant that passed
    its bar and was not measured slower than fp32 on this CPU class, by :data:`CPU_ORDER`.
    ``prefer_latency``: the caller mostly embeds one short text per call (a server): the variant
    with the lowest one-text latency measured at export on this CPU class (``speed.query_ms``)
    ranks first, and "slower than fp32" means a one-text latency no lower than fp32's; for
    folders without that measurement, onnxruntime's int8 (OpenVINO pays extra on the first call
    at each new input shape).
    ``batched_requests``: the caller batches concurrent requests together (a server), so ``auto``
    skips a variant that is not batch-invariant (:func:`batch_invariance_problem`), recording it
    in ``Choice.set_aside``; asked for by name, such a variant loads with it as ``Choice.caveat``.
    Where ``auto`` finds nothing to load it raises :class:`NothingToLoadError` with what it set
    aside.
    """
    names = {p.value for p in Precision}
    if provider not in {"auto", *(p.value for p in Provider)}:
        raise ProviderError(f"provider must be auto, cpu, cuda or openvino, got {provider!r}")
    if variant not in {"auto", *names}:
        raise ProviderError(f"variant must be auto, {', '.join(sorted(names))}, got {variant!r}")
    have = manifest.variants
    if provider == Provider.CUDA and not installed.cuda:
        raise ProviderError(
            "provider='cuda' asked for, but no CUDA provider is available "
            "(pip install 'dmeta-embed[gpu]' on a machine with an NVIDIA GPU)"
        )
    on_ov = [p.value for p in OPENVINO_VARIANTS]
    if provider == Provider.OPENVINO or variant in on_ov:
        # int8-ov and bf16 are the entries validated on OpenVINO (the others on onnxruntime)
        if provider not in {"auto", Provider.OPENVINO} or variant not in {"auto", *on_ov}:
            raise ProviderError(
                f"variant {' or '.join(map(repr, on_ov))} runs on provider 'openvino' only, and provider "
                f"'openvino' runs only those (asked: variant={variant!r}, provider={provider!r})"
            )
        basis = Basis.ASKED_FOR
        if variant == "auto":  # provider='openvino': the folder's OpenVINO variant
            variant, basis = _openvino_auto(manifest, cpu)
        asked = Precision(variant)
        if not installed.openvino:
            raise ProviderError(
                f"variant {asked.value!r} runs on OpenVINO, which is not installed: pip install "
                "'dmeta-embed[openvino]' (beside [cpu], in the same environment)"
            )
        if asked.value not in have:
            raise ProviderError(
                f"variant {asked.value!r} is not in this folder (it has: {', '.join(have)}); "
                f"export it with --variants ...,{asked.value}"
            )
        return _named(_openvino_choice(manifest, cpu, basis, asked), manifest, cpu, batched_requests)
    use_cuda = provider == Provider.CUDA or (
        provider == "auto" and installed.cuda and variant != Precision.INT8
    )
    if variant != "auto":
        if variant not in have:
            raise ProviderError(f"variant {variant!r} is not in this folder (it has: {', '.join(have)})")
        if use_cuda:
            choice = Choice(Precision(variant), Provider.CUDA, Basis.ASKED_FOR, cpu.cpu_class)
            return _named(choice, manifest, cpu, batched_requests)
        choice = _cpu_choice(manifest, Precision(variant), cpu, Basis.ASKED_FOR)
        return _named(choice, manifest, cpu, batched_requests)
    if use_cuda:
        not_invariant: list[Objection] = []
        for p in (Precision.FP16, Precision.FP32):
            if p.value in have:
                problem = batch_invariance_problem(manifest, p) if batched_requests else None
                if problem:
                    not_invariant.append(problem)
                    continue
                return Choice(
                    p, Provider.CUDA, Basis.CUDA_FASTEST, cpu.cpu_class, set_aside=tuple(not_invariant)
                )
    return _auto_cpu(manifest, cpu, installed, prefer_latency, provider, batched_requests)


def _measured(
    manifest: Manifest, variants: list[Precision], cpu_class: str, key: str
) -> dict[Precision, float]:
    """``speed[key]`` (``tokens_per_s``, ``query_ms``) of each of ``variants`` that the export
    measured on ``cpu_class``; the others are left out (a figure from another class says nothing
    here)."""
    out = {}
    for p in variants:
        figure = manifest.variants[p.value].speed.figure_on(cpu_class, key)
        if figure is not None:
            out[p] = figure
    return out


def _slower_than_fp32(manifest: Manifest, p: Precision, cls: str, prefer_latency: bool) -> Objection | None:
    """Why ``p`` loses to fp32 on ``cls`` by the export's measurement (None when it does not, or
    when nothing measured on ``cls`` says so). A server (``prefer_latency``) compares the one-text
    latency where the export measured it for both, since a variant can answer one short text
    sooner than fp32 and still run bulk work slower (int8 on AVX2 with real all-mpnet-base-v2:
    docs/performance.md, "AVX2"); otherwise the bulk throughput decides."""
    v = manifest.variants[p.value]
    if prefer_latency and Precision.FP32.value in manifest.variants:
        ms = _measured(manifest, [p, Precision.FP32], cls, "query_ms")
        if len(ms) == 2:
            if ms[p] < ms[Precision.FP32]:
                return None
            return Objection(
                p, Why.SLOWER_ONE_TEXT, CpuClass(cls), query_ms=ms[p], fp32_query_ms=ms[Precision.FP32]
            )
    if not v.speed.slower_than_fp32_on(cls):
        return None
    return Objection(p, Why.SLOWER_THAN_FP32, CpuClass(cls), vs_fp32=v.speed.vs_fp32)


def _openvino_auto(manifest: Manifest, cpu: CpuInfo) -> tuple[str, Basis]:
    """``provider='openvino'`` with ``variant='auto'``: of the folder's OpenVINO variants, the
    fastest measured at export on this CPU class; unmeasured, bf16 first where bf16 is native,
    else int8-ov (bf16 elsewhere would run in f32)."""
    found = [p for p in OPENVINO_VARIANTS if p.value in manifest.variants]
    if not found:
        # the caller says it is not in this folder
        return Precision.INT8_OV.value, Basis.OPENVINO_ORDER
    rate = _measured(manifest, found, cpu.cpu_class.value, "tokens_per_s")
    if len(found) > 1 and len(rate) == len(found):
        return max(found, key=lambda p: rate[p]).value, Basis.OPENVINO_FASTEST_MEASURED
    order = (Precision.BF16, Precision.INT8_OV) if cpu.bf16 else (Precision.INT8_OV, Precision.BF16)
    return next(p for p in order if p in found).value, Basis.OPENVINO_ORDER


def _auto_cpu(
    manifest: Manifest,
    cpu: CpuInfo,
    installed: Installed,
    prefer_latency: bool,
    provider: str,
    batched: bool = False,
) -> Choice:
    have = manifest.variants
    cls = cpu.cpu_class.value
    #: every variant passed over, and why, in the order they were considered
    set_aside: list[Objection] = []
    #: variants auto never loads here: they would not give the vectors they were validated with
    refused: list[Precision] = []
    #: correct here, only measured slower than fp32: loaded when nothing else is left
    slow: list[Objection] = []
    candidates: list[Precision] = []
    for p in (Precision.INT8_OV, Precision.BF16, Precision.INT8, Precision.FP32):
        v = have.get(p.value)
        if v is None:
            continue
        if p in OPENVINO_VARIANTS and (provider == Provider.CPU or not installed.openvino):
            continue  # not installed (or onnxruntime's own CPU provider asked for): nothing to explain
        if p not in OPENVINO_VARIANTS and not installed.onnxruntime:
            set_aside.append(Objection(p, Why.ONNXRUNTIME_MISSING))
            continue
        caveat = _caveat(manifest, p, cpu, batched)
        slower = None if p == Precision.FP32 else _slower_than_fp32(manifest, p, cls, prefer_latency)
        if caveat:  # never auto's, however fast; both reasons are said
            refused.append(p)
            set_aside += [caveat] if slower is None else [caveat, slower]
        elif slower:
            slow.append(slower)
            set_aside.append(slower)
        else:
            candidates.append(p)
    if not candidates and slow:
        candidates = [slow[0].variant]
        set_aside.remove(slow[0])
    if not candidates:
        if not installed.onnxruntime and any(p.value in have for p in (Precision.INT8, Precision.FP32)):
            # the folder's CPU variants need onnxruntime: the pip line, not a list of reasons
            raise MissingDependencyError("onnxruntime", EXTRAS["onnxruntime"], NOTES["onnxruntime"])
        said = "; ".join(map(str, set_aside))
        if refused:
            raise NothingToLoadError(
                "auto loads no variant that would not reproduce its validated vectors here: "
                + said
                + ". To load one anyway, ask for it by name: "
                + " or ".join(f"variant={p.value!r} (CLI: --variant {p.value})" for p in refused),
                tuple(set_aside),
                tuple(refused),
            )
        raise NothingToLoadError(
            f"no CPU variant in this folder that this process can run (it has: {', '.join(have)}"
            + (f"; {said}" if said else "")
            + "); pass provider='cuda'",
            tuple(set_aside),
        )
    measured = _measured(manifest, candidates, cls, "tokens_per_s")
    query_ms = None
    if len(candidates) == 1:
        order, basis = candidates, Basis.ONLY_ONE_LEFT
    elif len(measured) == len(candidates):
        order, basis = sorted(candidates, key=lambda p: -measured[p]), Basis.FASTEST_MEASURED
    else:
        rank = CPU_ORDER.get(cpu.cpu_class, DEFAULT_CPU_ORDER)
        order = sorted(candidates, key=lambda p: rank.index(p) if p in rank else len(rank))
        basis = Basis.BUILT_IN_ORDER
    if prefer_latency and len(candidates) > 1:
        latency = _measured(manifest, candidates, cls, "query_ms")
        if len(latency) == len(candidates):
            order, basis = sorted(candidates, key=lambda p: latency[p]), Basis.LOWEST_LATENCY
            query_ms = latency[order[0]]
        elif Precision.INT8 in order and order[0] != Precision.INT8:
            # folders exported before query_ms was measured: OpenVINO's first call at each new
            # input shape is slow, onnxruntime's int8 the usual fastest single-query engine
            order.remove(Precision.INT8)
            order.insert(0, Precision.INT8)
            basis = Basis.INT8_FIRST_FOR_REQUESTS
    best = order[0]
    if best in OPENVINO_VARIANTS:
        return replace(_openvino_choice(manifest, cpu, basis, best, tuple(set_aside)), query_ms=query_ms)
    return _cpu_choice(manifest, best, cpu, basis, tuple(set_aside), query_ms)
