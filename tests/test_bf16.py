"""The bf16 variant: the fp32 graph (``model.onnx``) run by OpenVINO in bf16, built and chosen only
where the CPU computes bf16 natively. The choice and the builder's availability are tested with
the CPU injected (every class, on any machine); the real export only where bf16 is native."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from dmeta_embed.errors import ExportError, ProviderError
from dmeta_embed.export.builders import BUILDERS, default_variants
from dmeta_embed.export.builders.bf16 import BF16
from dmeta_embed.manifest import BARS, VARIANT_FILES, Manifest, Precision, Provider, Variant
from dmeta_embed.runtime.choice import Basis, Bf16, Objection, Why, choose
from dmeta_embed.runtime.cpu import CpuClass, CpuInfo, detect
from dmeta_embed.runtime.installed import Installed
from dmeta_embed.texts import probe_texts
from dmeta_embed.variant_records import EngineProperties, InferencePrecision, Speed
from tests.test_choice import manifest, variant

OPENVINO = Installed(openvino=True)
HINT = "INFERENCE_PRECISION_HINT"
AMX = CpuInfo(CpuClass.AMX, arch="x86_64", flags=frozenset({"avx512f", "amx_tile", "amx_int8", "amx_bf16"}))
ZEN4 = CpuInfo(
    CpuClass.AVX512_VNNI, arch="x86_64", flags=frozenset({"avx512f", "avx512_vnni", "avx512_bf16"})
)
AVX2 = CpuInfo(CpuClass.AVX2, arch="x86_64", flags=frozenset({"avx2"}))
VNNI_NO_BF16 = CpuInfo(CpuClass.AVX512_VNNI, arch="x86_64", flags=frozenset({"avx512f", "avx512_vnni"}))
ARM = CpuInfo(CpuClass.ARM64, arch="aarch64", flags=frozenset({"asimd"}))


def bf16(passed: bool = True, speed: Speed | None = None) -> Variant:
    return dataclasses.replace(
        variant(Precision.BF16, passed, speed),
        file="model.onnx",
        provider=Provider.OPENVINO,
        engine_properties=EngineProperties(InferencePrecision.BF16),
    )


def speed(cpu_class: str, tokens_per_s: float) -> Speed:
    return Speed(cpu_class, tokens_per_s=tokens_per_s, vs_fp32=tokens_per_s / 1000)


# -- the manifest -------------------------------------------------------------------------------------


def test_bf16_entry_points_at_the_fp32_file_and_round_trips() -> None:
    assert VARIANT_FILES[Precision.BF16] == VARIANT_FILES[Precision.FP32]  # no file of its own
    # its bar: below fp16's (fewer mantissa bits), above int8's
    assert BARS[Precision.INT8].min_cos < BARS[Precision.BF16].min_cos < BARS[Precision.FP16].min_cos
    m = manifest(variant(Precision.FP32), bf16(speed=speed("amx", 2500)))
    back = Manifest.from_dict(json.loads(json.dumps(m.to_dict())))
    v = back.variants["bf16"]
    assert v == m.variants["bf16"]
    assert (v.precision, v.file, v.provider.engine, v.engine_properties.config()) == (
        Precision.BF16,
        "model.onnx",
        "openvino",
        {HINT: "bf16"},
    )


# -- the builder: only where bf16 is native -----------------------------------------------------------


@pytest.mark.parametrize("cpu", [AVX2, VNNI_NO_BF16, ARM], ids=lambda c: c.cpu_class.value)
def test_builder_says_why_it_is_unavailable_without_native_bf16(cpu: CpuInfo) -> None:
    b = BF16(cpu)
    why = b.unavailable()
    assert why is not None and "no native bf16" in why and "f32" in why and "\n" not in why
    with pytest.raises(ExportError, match="bf16 cannot be built here: this CPU has no native bf16"):
        b.require()


@pytest.mark.parametrize("cpu", [AMX, ZEN4], ids=lambda c: c.cpu_class.value)
def test_builder_is_available_where_bf16_is_native_and_openvino_imports(cpu: CpuInfo, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: real("json") if n == "openvino" else real(n, *a)
    )
    assert BF16(cpu).unavailable() is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real(n, *a))
    assert "pip install 'dmeta-embed[openvino]'" in (BF16(cpu).unavailable() or "")


def test_default_export_leaves_it_out_with_the_reason_and_asking_is_an_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(BUILDERS, Precision.BF16, BF16(AVX2))
    chosen, skipped = default_variants()
    assert Precision.BF16 not in chosen and "no native bf16" in skipped[Precision.BF16]
    from dmeta_embed.export import export_model

    # refused before any model is read: not an emulated (or silently f32) run
    with pytest.raises(ExportError, match="no native bf16"):
        export_model(str(tmp_path / "no-such-model"), tmp_path / "out", variants=("fp32", "bf16"))
    assert not (tmp_path / "out").exists()


def test_cli_offers_it() -> None:
    from dmeta_embed.cli.options import VARIANTS

    assert "bf16" in VARIANTS


def test_inspect_shows_the_engine_and_precision(tmp_path: Path) -> None:
    from dmeta_embed.cli.info import summary

    manifest(variant(Precision.FP32), bf16(speed=speed("amx", 2500))).save(tmp_path)
    row = next(line for line in summary(tmp_path).splitlines() if line.startswith("bf16 "))
    assert "model.onnx" in row and "on amx, bf16" in row and "2.50x on amx" in row


# -- the runtime choice -------------------------------------------------------------------------------


@pytest.mark.parametrize("cpu", [AMX, ZEN4], ids=lambda c: c.cpu_class.value)
def test_auto_picks_bf16_where_native_and_measured_fastest(cpu: CpuInfo) -> None:
    c = cpu.cpu_class.value
    m = manifest(
        variant(Precision.FP32, speed=speed(c, 1000)),
        variant(Precision.INT8, speed=speed(c, 2000)),
        variant(Precision.INT8_OV, speed=speed(c, 2500)),
        bf16(speed=speed(c, 3000)),
    )
    ch = choose(m, cpu=cpu, installed=OPENVINO)
    assert (ch.variant, ch.provider, ch.engine_properties) == (
        Precision.BF16,
        Provider.OPENVINO,
        {HINT: "bf16"},
    )
    assert (ch.basis, ch.bf16, ch.set_aside, ch.caveat) == (Basis.FASTEST_MEASURED, Bf16.NATIVE, (), None)
    # slower than another variant at the bar: not chosen
    slower = dataclasses.replace(m, variants={**m.variants, "bf16": bf16(speed=speed(c, 2400))})
    assert choose(slower, cpu=cpu, installed=OPENVINO).variant == Precision.INT8_OV
    # below its bar: never auto's, however fast
    missed = dataclasses.replace(m, variants={**m.variants, "bf16": bf16(False, speed(c, 9000))})
    ch = choose(missed, cpu=cpu, installed=OPENVINO)
    assert ch.variant == Precision.INT8_OV
    assert [(o.variant, o.why, o.min_cos) for o in ch.set_aside] == [(Precision.BF16, Why.MISSED_BAR, 0.5)]
    # no OpenVINO here, or onnxruntime's CPU provider asked for: onnxruntime's fastest
    assert choose(m, cpu=cpu, installed=Installed()).variant == Precision.INT8
    assert choose(m, "auto", "cpu", cpu=cpu, installed=OPENVINO).variant == Precision.INT8


def test_auto_order_on_amx_without_measurement_puts_bf16_before_onnxruntime_int8() -> None:
    m = manifest(variant(Precision.FP32), variant(Precision.INT8), bf16())
    ch = choose(m, cpu=AMX, installed=OPENVINO)
    assert (ch.variant, ch.engine_properties) == (Precision.BF16, {HINT: "bf16"})
    assert (ch.basis, ch.bf16) == (Basis.BUILT_IN_ORDER, Bf16.NATIVE)
    # with int8-ov there, bf16 still leads: real weights leave int8-ov weights-only, 0.7-0.8x
    # bf16 on AMX (docs/performance.md, "AMX"); provider='openvino' follows the same order
    both = dataclasses.replace(m, variants={**m.variants, "int8-ov": variant(Precision.INT8_OV)})
    assert choose(both, cpu=AMX, installed=OPENVINO).variant == Precision.BF16
    ov = choose(both, "auto", "openvino", cpu=AMX, installed=OPENVINO)
    assert (ov.variant, ov.basis) == (Precision.BF16, Basis.OPENVINO_ORDER)
    # measured on this class, the faster one wins, also for provider='openvino'
    measured = dataclasses.replace(
        both,
        variants={
            **both.variants,
            "bf16": bf16(speed=speed("amx", 3000)),
            "int8-ov": dataclasses.replace(both.variants["int8-ov"], speed=speed("amx", 4000)),
        },
    )
    ov = choose(measured, "auto", "openvino", cpu=AMX, installed=OPENVINO)
    assert (ov.variant, ov.basis) == (Precision.INT8_OV, Basis.OPENVINO_FASTEST_MEASURED)


@pytest.mark.parametrize("cpu", [AVX2, VNNI_NO_BF16, ARM], ids=lambda c: c.cpu_class.value)
def test_auto_never_picks_bf16_without_native_bf16(cpu: CpuInfo) -> None:
    c = cpu.cpu_class.value
    # a folder exported elsewhere, with bf16 "measured" fastest on this class: still not auto's
    m = manifest(variant(Precision.FP32, speed=speed(c, 1000)), bf16(speed=speed(c, 5000)))
    ch = choose(m, cpu=cpu, installed=OPENVINO)
    assert ch.variant == Precision.FP32
    assert ch.set_aside == (Objection(Precision.BF16, Why.NO_NATIVE_BF16, cpu.cpu_class),)


@pytest.mark.parametrize("cpu", [AVX2, VNNI_NO_BF16, ARM], ids=lambda c: c.cpu_class.value)
def test_asked_for_without_native_bf16_loads_in_f32_with_a_warning(cpu: CpuInfo) -> None:
    m = manifest(variant(Precision.FP32), bf16())
    for asked in ({"variant": "bf16"}, {"variant": "bf16", "provider": "openvino"}):
        ch = choose(m, **asked, cpu=cpu, installed=OPENVINO)
        assert (ch.variant, ch.provider) == (Precision.BF16, Provider.OPENVINO)
        # f32 said, not emulated bf16: the vectors are fp32's, the export's speed is not
        assert (ch.engine_properties, ch.bf16) == ({HINT: "f32"}, Bf16.IN_F32)
        assert ch.caveat == Objection(Precision.BF16, Why.NO_NATIVE_BF16, cpu.cpu_class) and ch.warning


def test_asked_for_where_native_runs_bf16_and_refuses_other_engines() -> None:
    m = manifest(variant(Precision.FP32), bf16())
    ch = choose(m, "bf16", cpu=AMX, installed=OPENVINO)
    assert (ch.engine_properties, ch.caveat, ch.warning) == ({HINT: "bf16"}, None, "")
    assert (ch.basis, ch.bf16) == (Basis.ASKED_FOR, Bf16.NATIVE)
    # provider='openvino' alone: the folder's OpenVINO variant
    ov = choose(m, "auto", "openvino", cpu=AMX, installed=OPENVINO)
    assert (ov.variant, ov.basis) == (Precision.BF16, Basis.OPENVINO_ORDER)
    with pytest.raises(ProviderError, match="runs on provider 'openvino' only"):
        choose(m, "bf16", "cpu", cpu=AMX, installed=OPENVINO)
    with pytest.raises(ProviderError, match=r"pip install 'dmeta-embed\[openvino\]'"):
        choose(m, "bf16", cpu=AMX, installed=Installed())
    with pytest.raises(ProviderError, match=r"not in this folder.*--variants \.\.\.,bf16"):
        choose(manifest(variant(Precision.FP32)), "bf16", cpu=AMX, installed=OPENVINO)


# -- OpenVINO runs the file bf16 points at -----------------------------------------------------------


def _st_reference(src: Path, texts: list[str]) -> np.ndarray:
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(src), device="cpu").encode(
        texts, batch_size=8, normalize_embeddings=True
    )


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def fp32_export(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dmeta_embed.export import export_model

    out = tmp_path_factory.mktemp("tiny-fp32") / "model"
    export_model(str(tiny_src), out, variants=("fp32",))
    return out


def test_openvino_runs_the_fp32_file_in_f32_like_torch(tiny_src: Path, fp32_export: Path) -> None:
    """The premise on every CPU: OpenVINO compiles ``model.onnx`` (onnxruntime's fused Attention
    included) and, in f32, gives sentence-transformers' vectors."""
    pytest.importorskip("openvino")
    from dmeta_embed.runtime.openvino import OpenVINORunner
    from dmeta_embed.runtime.pipeline import embed_tokenized
    from dmeta_embed.runtime.tokenize import TextTokenizer

    m = Manifest.load(fp32_export)
    texts = probe_texts(m.max_length)
    tok = TextTokenizer(fp32_export / m.tokenizer.file, m.max_length).encode(texts)
    runner = OpenVINORunner(fp32_export / "model.onnx", 1, {HINT: "f32"}, cache_dir=None)
    ours = embed_tokenized(
        runner, tok, pad_id=m.tokenizer.pad_token_id, dim=m.dim, max_batch_tokens=1024, batch_size=16
    )
    c = _cosines(ours, _st_reference(tiny_src, texts))
    assert c.min() >= BARS[Precision.FP32].min_cos, c.min()


@pytest.fixture(scope="module")
def mean_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with mean pooling. bf16 is measured on it rather than on the CLS-pooled tiny:
    one token's vector of a 2-layer, 64-wide random net is bf16's worst case (bf16 rounding of every
    Linear's input, weights and output emulated in torch: CLS min cos 0.99925, mean pooling
    0.99979; the same emulation on the BERT-base shape gave 0.99986, where OpenVINO's bf16 on AMX
    measured 0.99987)."""
    why = BF16().unavailable()
    if why is not None:
        pytest.skip(f"bf16 variant not built here: {why}")
    from dmeta_embed.manifest import Pooling
    from tests.random_models import build_model

    return build_model(tmp_path_factory.mktemp("tiny-mean-src"), "tiny", pooling=Pooling.MEAN)


@pytest.fixture(scope="module")
def bf16_export(mean_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dmeta_embed.export import export_model

    out = tmp_path_factory.mktemp("tiny-bf16") / "model"
    export_model(str(mean_src), out, variants=("fp32", "bf16"))
    return out


def test_real_export_meets_its_bar_against_torch(mean_src: Path, bf16_export: Path) -> None:
    from dmeta_embed import Embedder

    m = Manifest.load(bf16_export)
    v, fp32 = m.variants["bf16"], m.variants["fp32"]
    assert (v.file, v.sha256, v.provider) == ("model.onnx", fp32.sha256, Provider.OPENVINO)
    assert v.engine_properties.bf16 and v.validated_on.startswith("openvino ")
    assert v.fidelity.passed and v.fidelity.batch_min_cos is not None
    assert v.speed.measured_on(detect().cpu_class.value) and v.speed.tokens_per_s > 0
    # independently of the export's own measurement: the runtime's bf16 against sentence-transformers
    e = Embedder.load(bf16_export, variant="bf16")
    assert (e.choice.engine_properties, e.choice.bf16, e.choice.caveat) == ({HINT: "bf16"}, Bf16.NATIVE, None)
    texts = probe_texts(m.max_length)
    c = _cosines(e.encode(texts), _st_reference(mean_src, texts))
    bar = BARS[Precision.BF16]
    assert c.min() >= bar.min_cos and c.mean() >= bar.mean_cos, (c.min(), c.mean())


def test_builder_path_on_every_cpu_with_f32_standing_in(tiny_src: Path, tmp_path: Path, monkeypatch) -> None:
    """The export's bf16 path (build, validation on OpenVINO, speed run, manifest entry) on any
    CPU: the builder told it has native bf16, OpenVINO asked for f32 (what the CPU here can run).
    The real bf16 build is ``test_real_export_meets_its_bar_against_torch``."""
    pytest.importorskip("openvino")
    from dmeta_embed.export import export_model
    from dmeta_embed.export.builders import bf16 as builder

    monkeypatch.setitem(BUILDERS, Precision.BF16, BF16(AMX))
    monkeypatch.setattr(builder, "PROPERTIES", EngineProperties(InferencePrecision.F32))
    monkeypatch.setattr(builder, "_check_bf16", lambda runner: None)
    out = tmp_path / "model"
    m = export_model(str(tiny_src), out, variants=("bf16",))
    assert list(m.variants) == ["bf16"] and sorted(p.name for p in out.glob("*.onnx")) == ["model.onnx"]
    v = m.variants["bf16"]
    assert (v.file, v.provider, v.engine_properties.config()) == (
        "model.onnx",
        Provider.OPENVINO,
        {HINT: "f32"},
    )
    assert v.fidelity.passed and v.fidelity.batch_min_cos is not None and v.fidelity.batch_min_cos > 0.9999
    assert v.speed.measured_on(detect().cpu_class.value) and v.speed.engine == "openvino"
    texts = probe_texts(m.max_length)
    from dmeta_embed import Embedder

    e = Embedder.load(out, variant="bf16")
    assert e.provider == Provider.OPENVINO
    c = _cosines(e.encode(texts), _st_reference(tiny_src, texts))
    assert c.min() >= BARS[Precision.FP32].min_cos, c.min()  # f32 here: fp32's vectors
