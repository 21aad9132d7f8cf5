"""Which variant of a folder to run, on which provider, and why: one pure function of facts.

The facts are the manifest (which variants passed their fidelity bar, where each was validated and
how fast it was there), this CPU (:class:`~dmeta_embed.runtime.cpu.CpuInfo`) and the providers
installed. Everything is passed in, so every CPU class can be tested on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .._optional import EXTRAS, NOTES
from ..errors import MissingDependencyError, ProviderError
from ..manifest import INVARIANCE_BAR, Manifest, Precision, Provider
from .cpu import CpuClass, CpuInfo
from .installed import Installed

#: ``auto``'s CPU order by class when the export measured no speed on this class (a folder
#: exported on another machine). On AMX bf16 (the fp32 graph on OpenVINO in bf16) leads: on real
#: MiniLM and MPNet it ran 1.3-1.4x int8-ov (which real weights leave weights-only) and 1.7-2.8x
#: onnxruntime's int8; on AVX-512 VNNI (AMD Zen 4) int8-ov with int8 weights throughout led bf16
#: on 3 of 4 real-weight workloads and ran 1.4-2.0x onnxruntime's int8 (where the export keeps
#: most weights float, as on real MPNet, it runs at bf16's speed; docs/performance.md, "AMX",
#: "AVX-512 VNNI").
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


@dataclass(frozen=True)
class Choice:
    """What to load: the variant, where it runs, how int8 weights are fed, and why."""

    variant: Precision
    provider: Provider
    #: int8 on CPU: ``"s8"`` (the file as exported) or ``"u8"`` (weights shifted at load); else None
    int8_weights: str | None
    reason: str
    #: int8-ov: the OpenVINO CPU properties to compile with (the manifest's, bf16 only where native)
    engine_properties: dict[str, str] = field(default_factory=dict)
    #: why this variant, asked for by name, may not give the validated vectors ("" when it will):
    #: ``auto`` never chooses such a variant; the Embedder logs this as a warning
    warning: str = ""


def batch_invariance_problem(manifest: Manifest, variant: Precision) -> str:
    """Why ``variant`` may give a text another vector inside a batch than alone ("" when it does
    not): a server batches concurrent requests, so there its answer would depend on its neighbours.

    The export's measurement (``Fidelity.batch_min_cos``) decides when it is there; int8 with one
    activation scale per batch (``Variant.int8["activations"]`` not ``per-row``; folders without
    the field are per-tensor) is never invariant, measured or not: the export's batches are a few,
    a server's are any. Unmeasured, fp32, fp16 and int8-ov (static scales) count as invariant;
    bf16 does not (OpenVINO's bf16 rounding follows the batch shape: real all-mpnet-base-v2 gave
    min cos 0.99923 alone vs in a batch, below the bar)."""
    v = manifest.variants[variant.value]
    if variant == Precision.INT8 and not v.int8.per_row:
        return (
            "int8 is not batch-invariant: it quantizes activations per tensor (one scale for the "
            "whole batch), so a text's vector depends on the texts batched with it"
        )
    measured = v.fidelity.batch_min_cos
    if measured is None and variant == Precision.BF16:
        return (
            "bf16 is not known to be batch-invariant: this folder's export did not measure a text "
            "alone vs inside a batch, and bf16 rounding depends on the batch shape"
        )
    if measured is not None and measured < INVARIANCE_BAR:
        return (
            f"{variant.value} is not batch-invariant: a text alone vs inside a batch gave min cos "
            f"{measured:.6f} at export (bar {INVARIANCE_BAR})"
        )
    return ""


def _caveat(manifest: Manifest, variant: Precision, cpu: CpuInfo, batched: bool = False) -> str:
    """Why ``variant`` would not reproduce its validated vectors here: it missed its bar, it is
    int8 and this CPU's int8 kernels are unknown, or ``batched`` (a server merging concurrent
    requests) and it is not batch-invariant ("" when none)."""
    v = manifest.variants[variant.value]
    f = v.fidelity
    if not f.passed:
        return (
            f"{variant.value} missed its fidelity bar at export (min cos {f.min_cos:.6f}, "
            f"bar {f.bar_min_cos}; mean cos {f.mean_cos:.6f}, bar {f.bar_mean_cos})"
        )
    if variant == Precision.BF16 and not cpu.bf16:
        # OpenVINO compiles the bf16 hint as f32 here: fp32's vectors, not the speed measured
        return (
            f"bf16: this CPU has no native bf16 (class {cpu.cpu_class.value}), so OpenVINO runs "
            "the graph in f32, not at the speed measured at export"
        )
    if variant == Precision.INT8 and cpu.int8_weights is None:
        return (
            f"int8: this CPU's int8 kernels are unknown (class {cpu.cpu_class.value}), "
            "so its vectors may differ from the validated ones"
        )
    return batch_invariance_problem(manifest, variant) if batched else ""


def _named(choice: Choice, manifest: Manifest, cpu: CpuInfo, batched: bool) -> Choice:
    """An explicitly asked-for choice, with the warning its variant deserves."""
    caveat = _caveat(manifest, choice.variant, cpu, batched)
    if not caveat:
        return choice
    return replace(choice, warning=caveat + "; loaded because it was asked for by name")


def _validated(manifest: Manifest, variant: Precision) -> str:
    cpu = manifest.variants[variant.value].validated_cpu
    return f"validated on {cpu.cpu_class}" if cpu.cpu_class else "validated"


def _openvino_choice(
    manifest: Manifest, cpu: CpuInfo, why: str, variant: Precision = Precision.INT8_OV
) -> Choice:
    """``variant`` (int8-ov or bf16) on OpenVINO with the properties it was validated with; bf16
    only where this CPU computes bf16 natively (elsewhere OpenVINO would emulate it or fall back):
    f32 otherwise, said in the reason."""
    props = manifest.variants[variant.value].engine_properties.config()
    part = "float parts" if variant == Precision.INT8_OV else "graph"
    if props.get(PRECISION_HINT) == "bf16":
        if cpu.bf16:
            why += f"; {part} in bf16 (native on this CPU)"
        else:
            props[PRECISION_HINT] = "f32"
            why += f"; {part} in f32: bf16 was chosen at export, this CPU has no native bf16"
    return Choice(variant, Provider.OPENVINO, None, why, props)


def _cpu_choice(manifest: Manifest, variant: Precision, cpu: CpuInfo, why: str) -> Choice:
    """``variant`` on the CPU provider, with the int8 weight format this CPU computes exactly."""
    if variant != Precision.INT8:
        return Choice(variant, Provider.CPU, None, why)
    weights = cpu.int8_weights
    where = f"int8 {_validated(manifest, variant)}; this CPU is {cpu.cpu_class.value}"
    if weights == "u8" and manifest.variants[variant.value].int8.saturation_free:
        return Choice(
            variant,
            Provider.CPU,
            "s8",
            f"{why}; {where}: 7-bit or u8 weights, exact here as exported (no shift)",
        )
    if weights == "u8":
        return Choice(variant, Provider.CPU, "u8", f"{why}; {where}: weights shifted to u8 at load (exact)")
    if weights == "s8":
        return Choice(variant, Provider.CPU, "s8", f"{why}; {where}: s8 weights run as exported (exact)")
    return Choice(
        variant,
        Provider.CPU,
        "s8",
        f"{why}; {where}: its int8 kernels are unknown, results may differ from the validated ones",
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
    skips a variant that is not batch-invariant (:func:`batch_invariance_problem`), saying so in
    the reason; asked for by name, such a variant loads with that warning.
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
        if variant == "auto":  # provider='openvino': the folder's OpenVINO variant
            variant = _openvino_auto(manifest, cpu)
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
        why = f"asked for; {asked.value} {_validated(manifest, asked)}, this CPU is {cpu.cpu_class.value}"
        return _named(_openvino_choice(manifest, cpu, why, asked), manifest, cpu, batched_requests)
    use_cuda = provider == Provider.CUDA or (
        provider == "auto" and installed.cuda and variant != Precision.INT8
    )
    if variant != "auto":
        if variant not in have:
            raise ProviderError(f"variant {variant!r} is not in this folder (it has: {', '.join(have)})")
        if use_cuda:
            choice = Choice(Precision(variant), Provider.CUDA, None, "asked for")
            return _named(choice, manifest, cpu, batched_requests)
        choice = _cpu_choice(manifest, Precision(variant), cpu, "asked for")
        return _named(choice, manifest, cpu, batched_requests)
    if use_cuda:
        not_invariant: list[str] = []
        for p in (Precision.FP16, Precision.FP32):
            if p.value in have:
                problem = batch_invariance_problem(manifest, p) if batched_requests else ""
                if problem:
                    not_invariant.append(problem)
                    continue
                why = f"CUDA is available and {p.value} is the fastest there"
                said = f" ({'; '.join(not_invariant)})" if not_invariant else ""
                return Choice(p, Provider.CUDA, None, why + said)
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


def _slower_than_fp32(manifest: Manifest, p: Precision, cls: str, prefer_latency: bool) -> str:
    """Why ``p`` loses to fp32 on ``cls`` by the export's measurement ("" when it does not, or
    when nothing measured on ``cls`` says so). A server (``prefer_latency``) compares the one-text
    latency where the export measured it for both, since a variant can answer one short text
    sooner than fp32 and still run bulk work slower (int8 on AVX2: real all-mpnet-base-v2 28 ms
    against fp32's 32 ms, bulk 0.997x); otherwise the bulk throughput decides."""
    v = manifest.variants[p.value]
    if prefer_latency and Precision.FP32.value in manifest.variants:
        ms = _measured(manifest, [p, Precision.FP32], cls, "query_ms")
        if len(ms) == 2:
            if ms[p] < ms[Precision.FP32]:
                return ""
            return (
                f"{p.value} answered one text no sooner than fp32 on {cls} "
                f"({ms[p]:.1f} against {ms[Precision.FP32]:.1f} ms)"
            )
    if not v.speed.slower_than_fp32_on(cls):
        return ""
    return f"{p.value} was measured slower than fp32 on {cls} ({v.speed.vs_fp32:.3g}x)"


def _openvino_auto(manifest: Manifest, cpu: CpuInfo) -> str:
    """``provider='openvino'`` with ``variant='auto'``: of the folder's OpenVINO variants, the
    fastest measured at export on this CPU class; unmeasured, bf16 first where bf16 is native,
    else int8-ov (bf16 elsewhere would run in f32)."""
    found = [p for p in OPENVINO_VARIANTS if p.value in manifest.variants]
    if not found:
        return Precision.INT8_OV.value  # the caller says it is not in this folder
    rate = _measured(manifest, found, cpu.cpu_class.value, "tokens_per_s")
    if len(rate) == len(found):
        return max(found, key=lambda p: rate[p]).value
    order = (Precision.BF16, Precision.INT8_OV) if cpu.bf16 else (Precision.INT8_OV, Precision.BF16)
    return next(p for p in order if p in found).value


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
    skipped: list[str] = []
    #: variants auto never loads here: they would not give the vectors they were validated with
    refused: list[tuple[Precision, str]] = []
    #: correct here, only measured slower than fp32: loaded when nothing else is left
    slow: list[tuple[Precision, str]] = []
    candidates: list[Precision] = []
    for p in (Precision.INT8_OV, Precision.BF16, Precision.INT8, Precision.FP32):
        v = have.get(p.value)
        if v is None:
            continue
        if p in OPENVINO_VARIANTS and (provider == Provider.CPU or not installed.openvino):
            continue  # not installed (or onnxruntime's own CPU provider asked for): nothing to explain
        if p not in OPENVINO_VARIANTS and not installed.onnxruntime:
            skipped.append(f"{p.value}: onnxruntime is not installed")
            continue
        caveat = _caveat(manifest, p, cpu, batched)
        note = "" if p == Precision.FP32 else _slower_than_fp32(manifest, p, cls, prefer_latency)
        slower = bool(note)
        if caveat:  # never auto's, however fast; both reasons are said
            refused.append((p, caveat))
            if slower:
                skipped.append(note)
        elif slower:
            slow.append((p, note))
        else:
            candidates.append(p)
    if not candidates and slow:
        candidates = [slow.pop(0)[0]]
    skipped += [note for _, note in refused + slow]
    if not candidates:
        if not installed.onnxruntime and any(p.value in have for p in (Precision.INT8, Precision.FP32)):
            # the folder's CPU variants need onnxruntime: the pip line, not a list of reasons
            raise MissingDependencyError("onnxruntime", EXTRAS["onnxruntime"], NOTES["onnxruntime"])
        if refused:
            raise ProviderError(
                "auto loads no variant that would not reproduce its validated vectors here: "
                + "; ".join(skipped)
                + ". To load one anyway, ask for it by name: "
                + " or ".join(f"variant={p.value!r} (CLI: --variant {p.value})" for p, _ in refused)
            )
        raise ProviderError(
            f"no CPU variant in this folder that this process can run (it has: {', '.join(have)}"
            + (f"; {'; '.join(skipped)}" if skipped else "")
            + "); pass provider='cuda'"
        )
    measured = _measured(manifest, candidates, cls, "tokens_per_s")
    if len(candidates) == 1:
        order, basis = candidates, "the only CPU variant left"
    elif len(measured) == len(candidates):
        order = sorted(candidates, key=lambda p: -measured[p])
        basis = f"fastest measured at export on {cls}"
    else:
        rank = CPU_ORDER.get(cpu.cpu_class, DEFAULT_CPU_ORDER)
        order = sorted(candidates, key=lambda p: rank.index(p) if p in rank else len(rank))
        basis = f"first in the built-in order for {cls} (the export measured no speed on {cls})"
    if prefer_latency and len(candidates) > 1:
        latency = _measured(manifest, candidates, cls, "query_ms")
        if len(latency) == len(candidates):
            order = sorted(candidates, key=lambda p: latency[p])
            basis = (
                f"single short requests: lowest one-text latency measured at export on {cls} "
                f"({latency[order[0]]:.1f} ms)"
            )
        elif Precision.INT8 in order and order[0] != Precision.INT8:
            # folders exported before query_ms was measured: OpenVINO's first call at each new
            # input shape is slow, onnxruntime's int8 the usual fastest single-query engine
            order.remove(Precision.INT8)
            order.insert(0, Precision.INT8)
            basis = "single short requests: onnxruntime's int8 first (OpenVINO recompiles per input shape)"
    best = order[0]
    why = basis + (f" ({'; '.join(skipped)})" if skipped else "")
    if best in OPENVINO_VARIANTS:
        return _openvino_choice(manifest, cpu, why, best)
    return _cpu_choice(manifest, best, cpu, why)
