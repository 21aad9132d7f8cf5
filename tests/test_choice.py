"""The variant choice for every CPU class, with the facts injected (no model, no CPU assumed)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dmeta_embed.errors import ProviderError
from dmeta_embed.manifest import (
    BARS,
    Fidelity,
    Manifest,
    Pooling,
    Precision,
    Provider,
    TokenizerInfo,
    Variant,
)
from dmeta_embed.runtime.choice import (
    BATCH_DEPENDENT,
    Basis,
    Bf16,
    Choice,
    Int8Feed,
    NothingToLoadError,
    Objection,
    Why,
    choose,
)
from dmeta_embed.runtime.cpu import S8_EXACT, U8_SHIFT, CpuClass, CpuInfo
from dmeta_embed.runtime.installed import Installed
from dmeta_embed.variant_records import (
    Activations,
    EngineProperties,
    InferencePrecision,
    Int8Recipe,
    Speed,
    ValidatedCpu,
)

NOTHING = Installed()
OPENVINO = Installed(openvino=True)
CUDA = Installed(cuda=True)
CLASSES = list(CpuClass)


def variant(p: Precision, passed: bool = True, speed: Speed | None = None, validated: str = "amx") -> Variant:
    bar = BARS[p]
    cos = 1.0 if passed else 0.5
    return Variant(
        precision=p,
        file=f"{p.value}.onnx",
        sha256="0" * 64,
        size_bytes=1,
        provider=Provider.CPU,
        fidelity=Fidelity(cos, cos, 0.0, 24, 1024, bar.min_cos, bar.mean_cos),
        validated_cpu=ValidatedCpu(cpu_class=validated),
        speed=speed or Speed(),
    )


def manifest(*variants: Variant) -> Manifest:
    return Manifest(
        source={},
        pooling=Pooling.CLS,
        normalize=True,
        max_length=512,
        dim=8,
        tokenizer=TokenizerInfo("tokenizer.json", 0),
        inputs=("input_ids", "attention_mask"),
        output="sentence_embedding",
        variants={v.precision.value: v for v in variants},
        export={},
    )


ALL = manifest(
    variant(Precision.FP32), variant(Precision.FP16), variant(Precision.INT8), variant(Precision.INT8_OV)
)
#: ``auto``'s own words for "ask for it by name": what the user types next
BY_NAME = "variant='int8' (CLI: --variant int8)"


def missed(p: Precision) -> Objection:
    """The objection ``variant(p, passed=False)`` earns: its figures against its bar."""
    bar = BARS[p]
    return Objection(
        p, Why.MISSED_BAR, min_cos=0.5, bar_min_cos=bar.min_cos, mean_cos=0.5, bar_mean_cos=bar.mean_cos
    )


def feed(c: CpuClass) -> Int8Feed:
    """How an s8 int8 file (no ``weights`` record) is fed on class ``c``, from the CPU tables."""
    return (
        Int8Feed.AS_EXPORTED
        if c in S8_EXACT
        else Int8Feed.SHIFTED_TO_U8
        if c in U8_SHIFT
        else Int8Feed.KERNELS_UNKNOWN
    )


def cpu(c: CpuClass) -> CpuInfo:
    return CpuInfo(c, "Vendor", "Model", "arm64" if c == CpuClass.ARM64 else "x86_64")


def test_every_class_has_one_int8_rule() -> None:
    for c in CLASSES:
        want = "s8" if c in S8_EXACT else "u8" if c in U8_SHIFT else None
        assert cpu(c).int8_weights == want, c
    assert CpuClass.UNKNOWN not in S8_EXACT | U8_SHIFT


@pytest.mark.parametrize("c", CLASSES)
def test_auto_on_cpu_without_optional_providers(c: CpuClass) -> None:
    ch = choose(ALL, cpu=cpu(c), installed=NOTHING)
    if c == CpuClass.UNKNOWN:  # int8 kernels unknown: exactness not guaranteed
        assert (ch.variant, ch.provider, ch.int8_weights) == (Precision.FP32, Provider.CPU, None)
        assert ch.set_aside == (Objection(Precision.INT8, Why.INT8_KERNELS_UNKNOWN, c),)
        assert ch.basis == Basis.ONLY_ONE_LEFT
    else:
        assert (ch.variant, ch.provider) == (Precision.INT8, Provider.CPU)
        assert ch.int8_weights == ("s8" if c in S8_EXACT else "u8")
        assert (ch.cpu_class, ch.validated_class, ch.set_aside) == (c, "amx", ())
        assert ch.basis == Basis.BUILT_IN_ORDER  # int8 and fp32, no speed measured
        assert ch.int8_feed == (Int8Feed.SHIFTED_TO_U8 if c in U8_SHIFT else Int8Feed.AS_EXPORTED)


@pytest.mark.parametrize("c", CLASSES)
def test_auto_with_openvino_installed(c: CpuClass) -> None:
    ch = choose(ALL, cpu=cpu(c), installed=OPENVINO)
    # the documented rule (docs/runtime.md), not the table under test: unmeasured, only AMX and
    # AVX-512 VNNI put an OpenVINO variant first (this folder has no bf16: int8-ov)
    if c in (CpuClass.AMX, CpuClass.AVX512_VNNI):
        assert (ch.variant, ch.provider) == (Precision.INT8_OV, Provider.OPENVINO)
    elif c == CpuClass.UNKNOWN:
        assert ch.variant == Precision.FP32  # int8-ov unmeasured here ranks after fp32
    else:  # unmeasured on this class: onnxruntime's int8 first
        assert (ch.variant, ch.provider) == (Precision.INT8, Provider.CPU)
    # a service of single short requests: onnxruntime's int8 before OpenVINO's shape recompiles
    latency = choose(ALL, cpu=cpu(c), installed=OPENVINO, prefer_latency=True)
    if c != CpuClass.UNKNOWN:
        assert latency.variant == Precision.INT8
    # provider='cpu' means onnxruntime's own CPU provider: never int8-ov
    assert choose(ALL, "auto", "cpu", cpu=cpu(c), installed=OPENVINO).provider == Provider.CPU


@pytest.mark.parametrize("c", CLASSES)
def test_export_measurement_on_this_class_decides(c: CpuClass) -> None:
    """A variant the export measured slower than fp32 on this class is never auto's choice, and
    the measured order beats the built-in one; a measurement on another class changes nothing."""

    def speed(cls: CpuClass, rate: float) -> Speed:
        return Speed(cls.value, tokens_per_s=rate, vs_fp32=rate / 1000)

    here = manifest(
        variant(Precision.FP32, speed=speed(c, 1000)),
        variant(Precision.INT8, speed=speed(c, 900)),
        variant(Precision.INT8_OV, speed=speed(c, 800)),
    )
    ch = choose(here, cpu=cpu(c), installed=OPENVINO)
    assert (ch.variant, ch.basis) == (Precision.FP32, Basis.ONLY_ONE_LEFT)
    slower = {o.variant: (o.cpu_class, o.vs_fp32) for o in ch.set_aside if o.why == Why.SLOWER_THAN_FP32}
    assert slower == {Precision.INT8: (c, 0.9), Precision.INT8_OV: (c, 0.8)}

    faster_ov = manifest(
        variant(Precision.FP32, speed=speed(c, 1000)),
        variant(Precision.INT8, speed=speed(c, 1500)),
        variant(Precision.INT8_OV, speed=speed(c, 2000)),
    )
    ch = choose(faster_ov, cpu=cpu(c), installed=OPENVINO)
    assert (ch.variant, ch.basis) == (Precision.INT8_OV, Basis.FASTEST_MEASURED)

    other = CpuClass.AVX2 if c != CpuClass.AVX2 else CpuClass.AMX
    elsewhere = manifest(
        variant(Precision.FP32, speed=speed(other, 1000)), variant(Precision.INT8, speed=speed(other, 500))
    )
    assert choose(elsewhere, cpu=cpu(c), installed=NOTHING).variant == (
        Precision.FP32 if c == CpuClass.UNKNOWN else Precision.INT8
    )


@pytest.mark.parametrize("c", [CpuClass.AMX, CpuClass.AVX512_VNNI])
def test_single_queries_follow_the_measured_latency(c: CpuClass) -> None:
    """``prefer_latency`` (a server) takes the lowest one-text latency the export measured on
    this class, which need not be the bulk winner's engine; without ``query_ms`` for every
    candidate it falls back to onnxruntime's int8. (bf16 needs a CPU with native bf16.)"""
    here = dataclasses.replace(cpu(c), flags=frozenset({"avx512_bf16"}))

    def speed(rate: float, query_ms: float | None, cls: CpuClass = c) -> Speed:
        return Speed(cls.value, tokens_per_s=rate, vs_fp32=rate / 1000, query_ms=query_ms)

    def folder(int8_ms: float | None, bf16_ms: float | None, cls: CpuClass = c) -> Manifest:
        return manifest(
            variant(Precision.FP32, speed=speed(1000, 20.0, cls)),
            variant(Precision.INT8, speed=speed(1500, int8_ms, cls)),
            variant(Precision.BF16, speed=speed(3000, bf16_ms, cls)),
        )

    # base size on AMX: bf16 first for bulk and for single queries
    ch = choose(folder(14.3, 11.5), cpu=here, installed=OPENVINO, prefer_latency=True)
    assert (ch.variant, ch.provider) == (Precision.BF16, Provider.OPENVINO)
    assert (ch.basis, ch.query_ms) == (Basis.LOWEST_LATENCY, 11.5)
    # a small model: onnxruntime's int8 answers one text sooner, bf16 still wins bulk work
    ch = choose(folder(2.1, 2.3), cpu=here, installed=OPENVINO, prefer_latency=True)
    assert (ch.variant, ch.provider, ch.basis, ch.query_ms) == (
        Precision.INT8,
        Provider.CPU,
        Basis.LOWEST_LATENCY,
        2.1,
    )
    bulk = choose(folder(2.1, 2.3), cpu=here, installed=OPENVINO)
    assert (bulk.variant, bulk.basis, bulk.query_ms) == (Precision.BF16, Basis.FASTEST_MEASURED, None)
    # one candidate unmeasured, or measured on another class: the old rule
    for m in (folder(14.3, None), folder(14.3, 11.5, CpuClass.AVX2 if c != CpuClass.AVX2 else CpuClass.AMX)):
        ch = choose(m, cpu=here, installed=OPENVINO, prefer_latency=True)
        assert (ch.variant, ch.basis, ch.query_ms) == (Precision.INT8, Basis.INT8_FIRST_FOR_REQUESTS, None)


@pytest.mark.parametrize("c", [k for k in CLASSES if k != CpuClass.UNKNOWN])
def test_a_server_judges_int8_against_fp32_by_one_text_latency(c: CpuClass) -> None:
    """Real all-mpnet-base-v2 on AVX2 (2026-12-02): int8 ran bulk work at 0.997x fp32 but one
    short text in 28.3 ms against fp32's 31.9. Bulk ``auto`` stays on fp32; a server takes int8,
    and goes back to fp32 when int8 answers one text no sooner; without fp32's ``query_ms`` the
    bulk rule decides for the server too."""

    def speed(rate: float, query_ms: float | None) -> Speed:
        return Speed(c.value, tokens_per_s=rate, vs_fp32=rate / 1000, query_ms=query_ms)

    def folder(int8_ms: float, fp32_ms: float | None = 31.9) -> Manifest:
        return manifest(
            variant(Precision.FP32, speed=speed(1000, fp32_ms)),
            variant(Precision.INT8, speed=speed(997, int8_ms)),
        )

    slower_in_bulk = Objection(Precision.INT8, Why.SLOWER_THAN_FP32, c, vs_fp32=0.997)
    bulk = choose(folder(28.3), cpu=cpu(c), installed=NOTHING)
    assert (bulk.variant, bulk.set_aside) == (Precision.FP32, (slower_in_bulk,))
    served = choose(folder(28.3), cpu=cpu(c), installed=NOTHING, prefer_latency=True)
    assert (served.variant, served.provider) == (Precision.INT8, Provider.CPU)
    assert (served.basis, served.query_ms, served.set_aside) == (Basis.LOWEST_LATENCY, 28.3, ())
    slow_one = choose(folder(33.0), cpu=cpu(c), installed=NOTHING, prefer_latency=True)
    assert slow_one.variant == Precision.FP32
    assert slow_one.set_aside == (
        Objection(Precision.INT8, Why.SLOWER_ONE_TEXT, c, query_ms=33.0, fp32_query_ms=31.9),
    )
    unmeasured = choose(folder(28.3, fp32_ms=None), cpu=cpu(c), installed=NOTHING, prefer_latency=True)
    assert (unmeasured.variant, unmeasured.set_aside) == (Precision.FP32, (slower_in_bulk,))


def test_missed_bar_is_skipped_and_said() -> None:
    m = manifest(variant(Precision.FP32), variant(Precision.INT8, passed=False))
    ch = choose(m, cpu=cpu(CpuClass.AVX2), installed=NOTHING)
    assert (ch.variant, ch.set_aside) == (Precision.FP32, (missed(Precision.INT8),))
    # the only CPU variant missed its bar: auto refuses it and says how to ask for it by name
    only = manifest(variant(Precision.INT8, passed=False))
    with pytest.raises(NothingToLoadError) as refused:
        choose(only, cpu=cpu(CpuClass.AVX2), installed=NOTHING)
    assert refused.value.set_aside == (missed(Precision.INT8),)
    assert refused.value.by_name == (Precision.INT8,) and BY_NAME in str(refused.value)
    assert isinstance(refused.value, ProviderError)  # what callers catch
    named = choose(only, "int8", cpu=cpu(CpuClass.AVX2), installed=NOTHING)
    assert (named.variant, named.int8_weights) == (Precision.INT8, "u8")
    assert (named.basis, named.caveat) == (Basis.ASKED_FOR, missed(Precision.INT8)) and named.warning
    # named, with fp32 there
    assert choose(m, "int8", cpu=cpu(CpuClass.AVX2), installed=NOTHING).caveat == missed(Precision.INT8)
    ch = choose(m, cpu=cpu(CpuClass.AVX2), installed=NOTHING)
    assert (ch.caveat, ch.warning) == (None, "")


def test_unknown_int8_kernels_are_never_auto() -> None:
    """On a CPU whose int8 kernels are unknown, auto refuses an int8-only folder (naming the
    variant and how to ask for it); by name it loads, with the warning."""
    only = manifest(variant(Precision.INT8))
    unknown = cpu(CpuClass.UNKNOWN)
    kernels = Objection(Precision.INT8, Why.INT8_KERNELS_UNKNOWN, CpuClass.UNKNOWN)
    with pytest.raises(NothingToLoadError) as refused:
        choose(only, cpu=unknown, installed=NOTHING)
    assert (refused.value.set_aside, refused.value.by_name) == ((kernels,), (Precision.INT8,))
    assert BY_NAME in str(refused.value)
    named = choose(only, "int8", cpu=unknown, installed=NOTHING)
    assert (named.variant, named.caveat, named.int8_feed) == (
        Precision.INT8,
        kernels,
        Int8Feed.KERNELS_UNKNOWN,
    )
    # a CPU with known kernels gets no warning for the same request
    avx2 = choose(only, "int8", cpu=cpu(CpuClass.AVX2), installed=NOTHING)
    assert (avx2.caveat, avx2.warning) == (None, "")


@pytest.mark.parametrize("c", CLASSES)
def test_explicit_requests_are_honoured_with_the_right_weights(c: CpuClass) -> None:
    ch = choose(ALL, "int8", "cpu", cpu=cpu(c), installed=NOTHING)
    assert (ch.variant, ch.provider, ch.basis) == (Precision.INT8, Provider.CPU, Basis.ASKED_FOR)
    assert ch.int8_weights == ("u8" if c in U8_SHIFT else "s8")
    assert ch.int8_feed == feed(c)  # KERNELS_UNKNOWN on an unknown class: results may differ
    on_cuda = choose(ALL, "fp32", cpu=cpu(c), installed=CUDA)
    assert (on_cuda.provider, on_cuda.basis, on_cuda.int8_feed) == (Provider.CUDA, Basis.ASKED_FOR, None)
    assert choose(ALL, "int8", cpu=cpu(c), installed=CUDA).provider == Provider.CPU  # int8 is a CPU file


def test_cuda_auto_and_errors() -> None:
    ch = choose(ALL, cpu=cpu(CpuClass.AVX2), installed=CUDA)
    assert (ch.variant, ch.provider, ch.basis) == (Precision.FP16, Provider.CUDA, Basis.CUDA_FASTEST)
    with pytest.raises(ProviderError, match="pip install 'dmeta-embed\\[gpu\\]'"):
        choose(ALL, "auto", "cuda", cpu=cpu(CpuClass.AMX), installed=NOTHING)
    with pytest.raises(ProviderError, match="pip install 'dmeta-embed\\[openvino\\]'"):
        choose(ALL, "int8-ov", cpu=cpu(CpuClass.AMX), installed=NOTHING)
    with pytest.raises(ProviderError, match="runs on provider 'openvino' only"):
        choose(ALL, "int8-ov", "cpu", cpu=cpu(CpuClass.AMX), installed=OPENVINO)
    with pytest.raises(ProviderError, match="variant must be"):
        choose(ALL, "int4", cpu=cpu(CpuClass.AMX), installed=NOTHING)
    with pytest.raises(ProviderError, match="provider must be"):
        choose(ALL, "auto", "tpu", cpu=cpu(CpuClass.AMX), installed=NOTHING)
    no_cpu = dataclasses.replace(ALL, variants={"fp16": ALL.variants["fp16"]})
    with pytest.raises(NothingToLoadError, match="pass provider='cuda'") as nothing:
        choose(no_cpu, cpu=cpu(CpuClass.AMX), installed=NOTHING)
    assert (nothing.value.set_aside, nothing.value.by_name) == ((), ())  # fp16 is a CUDA file: no objection
    with pytest.raises(ProviderError, match="is not in this folder"):
        choose(
            dataclasses.replace(ALL, variants={"fp32": ALL.variants["fp32"]}),
            "int8-ov",
            cpu=cpu(CpuClass.AMX),
            installed=OPENVINO,
        )


@pytest.mark.parametrize("c", CLASSES)
@pytest.mark.parametrize("native_bf16", [False, True])
def test_int8_ov_float_parts_in_bf16_only_where_native(c: CpuClass, native_bf16: bool) -> None:
    """An export that chose bf16 float parts runs them in bf16 only on CPUs with native bf16
    (elsewhere f32, what the search ran in); an f32 export stays f32 everywhere."""
    flags = frozenset({"avx512_bf16"}) if native_bf16 else frozenset()
    here = CpuInfo(c, arch="x86_64", flags=flags)
    bf16 = dataclasses.replace(
        variant(Precision.INT8_OV), engine_properties=EngineProperties(InferencePrecision.BF16)
    )
    ch = choose(manifest(variant(Precision.FP32), bf16), "int8-ov", cpu=here, installed=OPENVINO)
    assert ch.provider == Provider.OPENVINO
    assert ch.engine_properties == {"INFERENCE_PRECISION_HINT": "bf16" if native_bf16 else "f32"}
    assert ch.bf16 == (Bf16.NATIVE if native_bf16 else Bf16.IN_F32)
    f32 = dataclasses.replace(
        variant(Precision.INT8_OV), engine_properties=EngineProperties(InferencePrecision.F32)
    )
    ch = choose(manifest(variant(Precision.FP32), f32), "int8-ov", cpu=here, installed=OPENVINO)
    assert (ch.engine_properties, ch.bf16) == ({"INFERENCE_PRECISION_HINT": "f32"}, None)
    assert choose(ALL, "int8", cpu=here, installed=OPENVINO).engine_properties == {}  # onnxruntime's: none


@pytest.mark.parametrize("native_bf16", [False, True])
def test_unmeasured_order_on_avx512_vnni(native_bf16: bool) -> None:
    """A folder exported on another class (no speed measured here) on AVX-512 VNNI: int8-ov, then
    bf16 where bf16 is native, then onnxruntime's int8 (the order measured on AMD Zen 4, real
    weights); without native bf16 (Intel Cascade Lake) bf16 is never auto's and int8-ov's float
    parts run in f32."""
    flags = frozenset({"avx512_vnni", "avx512_bf16"} if native_bf16 else {"avx512_vnni"})
    here = CpuInfo(CpuClass.AVX512_VNNI, arch="x86_64", flags=flags)
    ov8 = dataclasses.replace(
        variant(Precision.INT8_OV), engine_properties=EngineProperties(InferencePrecision.BF16)
    )
    bf16 = dataclasses.replace(
        variant(Precision.BF16), engine_properties=EngineProperties(InferencePrecision.BF16)
    )
    folder = manifest(variant(Precision.FP32), variant(Precision.INT8), ov8, bf16)
    ch = choose(folder, cpu=here, installed=OPENVINO)
    assert (ch.variant, ch.provider) == (Precision.INT8_OV, Provider.OPENVINO)
    assert (ch.basis, ch.cpu_class) == (Basis.BUILT_IN_ORDER, CpuClass.AVX512_VNNI)
    assert ch.engine_properties == {"INFERENCE_PRECISION_HINT": "bf16" if native_bf16 else "f32"}
    without = manifest(variant(Precision.FP32), variant(Precision.INT8), bf16)
    ch = choose(without, cpu=here, installed=OPENVINO)
    assert ch.variant == (Precision.BF16 if native_bf16 else Precision.INT8)
    # onnxruntime only: its int8
    assert choose(folder, cpu=here, installed=NOTHING).variant == Precision.INT8


# -- a server batches concurrent requests: only batch-invariant variants ------------------------------

KNOWN = [c for c in CLASSES if c != CpuClass.UNKNOWN]


def measured(v: Variant, batch_min_cos: float | None = None, activations: str | None = None) -> Variant:
    """``v`` with an alone-vs-batch measurement and (int8) an activation scheme."""
    fidelity = dataclasses.replace(v.fidelity, batch_min_cos=batch_min_cos)
    recipe = Int8Recipe(activations=Activations(activations)) if activations else Int8Recipe()
    return dataclasses.replace(v, fidelity=fidelity, int8=recipe)


@pytest.mark.parametrize("c", KNOWN)
def test_serve_skips_per_tensor_int8_and_says_why(c: CpuClass) -> None:
    """Unmeasured (older folders): fp32 is invariant, per-tensor int8 (no ``activations`` field, or
    ``per-tensor``) is not, per-row int8 is; a per-tensor measurement that happened to pass changes
    nothing (one scale per batch is batch-dependent by construction)."""
    for int8 in (
        variant(Precision.INT8),
        measured(variant(Precision.INT8), None, "per-tensor"),
        measured(variant(Precision.INT8), 1.0, "per-tensor"),
    ):
        m = manifest(variant(Precision.FP32), int8)
        assert choose(m, cpu=cpu(c), installed=NOTHING).variant == Precision.INT8  # bulk: the faster
        ch = choose(m, cpu=cpu(c), installed=NOTHING, prefer_latency=True, batched_requests=True)
        assert (ch.variant, ch.provider, ch.caveat) == (Precision.FP32, Provider.CPU, None)
        assert ch.set_aside == (Objection(Precision.INT8, Why.PER_TENSOR_INT8),)
    per_row = manifest(variant(Precision.FP32), measured(variant(Precision.INT8), None, "per-row"))
    ch = choose(per_row, cpu=cpu(c), installed=NOTHING, prefer_latency=True, batched_requests=True)
    assert (ch.variant, ch.set_aside) == (Precision.INT8, ())


@pytest.mark.parametrize(
    ("batch_min_cos", "invariant"),
    [(None, True), (0.9999, True), (0.99995, True), (0.99989, False), (0.9, False)],
)
def test_serve_follows_the_export_measurement(batch_min_cos: float | None, invariant: bool) -> None:
    """Measured alone vs in a batch at export: at or above 0.9999 a variant may serve, below it
    not; for int8-ov (static scales) and per-row int8 alike."""
    c = cpu(CpuClass.AMX)
    for p, activations, installed in (
        (Precision.INT8, "per-row", NOTHING),
        (Precision.INT8_OV, None, OPENVINO),
    ):
        m = manifest(variant(Precision.FP32), measured(variant(p), batch_min_cos, activations))
        assert choose(m, cpu=c, installed=installed).variant == p  # bulk: measured or not, the faster
        ch = choose(m, cpu=c, installed=installed, batched_requests=True)
        assert ch.variant == (p if invariant else Precision.FP32), (p, batch_min_cos)
        objection = Objection(p, Why.NOT_BATCH_INVARIANT, batch_min_cos=batch_min_cos)
        assert ch.set_aside == (() if invariant else (objection,))


def test_serve_refuses_a_folder_with_no_invariant_variant_and_loads_one_by_name() -> None:
    only = manifest(variant(Precision.INT8), measured(variant(Precision.FP32), 0.999))
    avx2 = cpu(CpuClass.AVX2)
    per_tensor = Objection(Precision.INT8, Why.PER_TENSOR_INT8)
    fp32_batch = Objection(Precision.FP32, Why.NOT_BATCH_INVARIANT, batch_min_cos=0.999)
    with pytest.raises(NothingToLoadError) as refused:
        choose(only, cpu=avx2, installed=NOTHING, batched_requests=True)
    assert refused.value.set_aside == (per_tensor, fp32_batch)
    assert refused.value.by_name == (Precision.INT8, Precision.FP32)
    assert f"{BY_NAME} or variant='fp32' (CLI: --variant fp32)" in str(refused.value)
    assert choose(only, cpu=avx2, installed=NOTHING).variant == Precision.INT8  # not a server: no matter
    named = choose(only, "int8", cpu=avx2, installed=NOTHING, batched_requests=True)
    assert (named.variant, named.int8_weights) == (Precision.INT8, "u8")
    assert (named.basis, named.caveat) == (Basis.ASKED_FOR, per_tensor) and named.warning
    assert choose(only, "int8", cpu=avx2, installed=NOTHING).caveat is None  # bulk: nothing to warn
    fp32 = choose(only, "fp32", cpu=avx2, installed=NOTHING, batched_requests=True)
    assert fp32.caveat == fp32_batch


def test_serve_on_cuda_skips_fp16_measured_batch_dependent() -> None:
    m = manifest(variant(Precision.FP32), measured(variant(Precision.FP16), 0.998))
    assert choose(m, cpu=cpu(CpuClass.AVX2), installed=CUDA).variant == Precision.FP16
    ch = choose(m, cpu=cpu(CpuClass.AVX2), installed=CUDA, batched_requests=True)
    assert (ch.variant, ch.provider, ch.basis) == (Precision.FP32, Provider.CUDA, Basis.CUDA_FASTEST)
    assert ch.set_aside == (Objection(Precision.FP16, Why.NOT_BATCH_INVARIANT, batch_min_cos=0.998),)
    # unmeasured fp16 (older folders) is float: invariant
    old = manifest(variant(Precision.FP32), variant(Precision.FP16))
    assert (
        choose(old, cpu=cpu(CpuClass.AVX2), installed=CUDA, batched_requests=True).variant == Precision.FP16
    )


def test_serve_takes_bf16_only_when_measured_invariant() -> None:
    """bf16 rounding follows the batch shape: unmeasured, it does not serve; measured at or above
    the bar, it may (where it is auto's choice at all: native bf16, OpenVINO installed)."""
    if "bf16" not in {p.value for p in Precision} or Precision("bf16") not in BARS:
        pytest.skip("this version has no bf16 variant")
    bf16 = Precision("bf16")
    amx = CpuInfo(CpuClass.AMX, arch="x86_64", flags=frozenset({"amx_bf16", "avx512_bf16"}))
    objections = {
        None: Objection(bf16, Why.BATCH_UNMEASURED),
        0.9995: Objection(bf16, Why.NOT_BATCH_INVARIANT, batch_min_cos=0.9995),
    }
    for batch_min_cos, served in ((None, False), (0.9995, False), (0.99999, True)):
        m = manifest(variant(Precision.FP32), measured(variant(bf16), batch_min_cos))
        bulk = choose(m, cpu=amx, installed=OPENVINO).variant
        if bulk != bf16:
            pytest.skip(f"bf16 is not auto's bulk choice on native bf16 here ({bulk.value})")
        ch = choose(m, cpu=amx, installed=OPENVINO, batched_requests=True)
        assert (ch.variant == bf16) == served, (batch_min_cos, ch.reason)
        batch = tuple(o for o in ch.set_aside if o.why in BATCH_DEPENDENT)
        assert batch == (() if served else (objections[batch_min_cos],))


@pytest.mark.parametrize(
    "weights,fed_on_avx2",
    [({"s7": 6, "u8": 2}, "s8"), ({"s7": 8}, "s8"), ({"s8": 8}, "u8"), ({}, "u8")],
    ids=["s7+u8", "s7", "s8", "older-folder"],
)
def test_saturation_free_int8_loads_unshifted_on_every_class(weights: dict, fed_on_avx2: str) -> None:
    """A file with no 8-bit s8 weights is exact as exported everywhere: the runtime feeds it
    unshifted even where u8×s8 saturates; an s8 file (or one exported before the field) is shifted
    there; classes whose u8×s8 is exact never shift."""
    v = dataclasses.replace(
        variant(Precision.INT8, validated="avx2"),
        int8=Int8Recipe(activations=Activations.PER_ROW, weights=weights) if weights else Int8Recipe(),
    )
    m = manifest(v)
    installed = Installed(cuda=False, openvino=False)
    avx2 = choose(m, "int8", cpu=cpu(CpuClass.AVX2), installed=installed)
    assert avx2.int8_weights == fed_on_avx2
    assert avx2.int8_feed == (Int8Feed.SATURATION_FREE if fed_on_avx2 == "s8" else Int8Feed.SHIFTED_TO_U8)
    amx = choose(m, "int8", cpu=cpu(CpuClass.AMX), installed=installed)
    assert (amx.int8_weights, amx.int8_feed) == ("s8", Int8Feed.AS_EXPORTED)


# -- the words are generated from the decision ----------------------------------------------------------


@pytest.mark.parametrize("why", list(Why))
def test_every_objection_has_words(why: Why) -> None:
    """Text generation is total: every ``Why`` renders a sentence naming its variant, with its
    figures or without them (a record from another version may lack one)."""
    bare = Objection(Precision.INT8, why)
    full = Objection(
        Precision.INT8,
        why,
        CpuClass.AVX2,
        min_cos=0.5,
        bar_min_cos=0.99,
        mean_cos=0.6,
        bar_mean_cos=0.995,
        batch_min_cos=0.998,
        vs_fp32=0.9,
        query_ms=3.0,
        fp32_query_ms=2.0,
    )
    for o in (bare, full):
        assert str(o).startswith("int8") and len(str(o)) > len("int8: ")
        ch = Choice(Precision.FP32, Provider.CPU, Basis.ONLY_ONE_LEFT, CpuClass.AVX2, set_aside=(o,))
        assert str(o) in ch.reason
        named = Choice(Precision.INT8, Provider.CPU, Basis.ASKED_FOR, CpuClass.AVX2, caveat=o)
        assert named.warning.startswith(str(o))
        assert Objection.from_dict(json.loads(json.dumps(o.to_dict()))) == o


@pytest.mark.parametrize("basis", list(Basis))
@pytest.mark.parametrize("provider", list(Provider))
def test_every_basis_has_words(basis: Basis, provider: Provider) -> None:
    ch = Choice(Precision.FP32, provider, basis, CpuClass.AMX)
    assert ch.reason and ch.warning == ""
    assert Choice(Precision.FP32, provider, basis, CpuClass.AMX, query_ms=1.5).reason


@pytest.mark.parametrize("c", CLASSES)
@pytest.mark.parametrize("batched", [False, True])
def test_the_decision_travels_as_json(c: CpuClass, batched: bool) -> None:
    """``to_dict`` is plain JSON with enums as their values (what ``inspect`` prints and the corpus
    workers receive); ``from_dict`` gives back the same choice, words included."""
    here = dataclasses.replace(cpu(c), flags=frozenset({"avx512_bf16"}))
    bf16 = dataclasses.replace(
        variant(Precision.BF16), engine_properties=EngineProperties(InferencePrecision.BF16)
    )
    folder = manifest(
        variant(Precision.FP32, speed=Speed(cpu_class=c.value, tokens_per_s=1000, query_ms=5.0)),
        variant(Precision.INT8, passed=False),
        bf16,
    )
    asked = [
        choose(folder, cpu=here, installed=OPENVINO, prefer_latency=batched, batched_requests=batched),
        choose(folder, "int8", cpu=here, installed=OPENVINO, batched_requests=batched),
        choose(folder, "bf16", cpu=cpu(c), installed=OPENVINO, batched_requests=batched),
        choose(ALL, cpu=here, installed=CUDA, batched_requests=batched),
    ]
    for ch in asked:
        d = json.loads(json.dumps(ch.to_dict()))
        assert d["variant"] == ch.variant.value and d["basis"] == ch.basis.value
        assert [o["why"] for o in d["set_aside"]] == [o.why.value for o in ch.set_aside]
        assert (d["reason"], d["warning"]) == (ch.reason, ch.warning)
        assert Choice.from_dict(d) == ch
