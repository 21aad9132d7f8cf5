"""Manifest schema and batching: pure functions, no model needed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dmeta_embed.errors import ModelLoadError
from dmeta_embed.manifest import (
    BARS,
    FORMAT_VERSION,
    Fidelity,
    Manifest,
    Pooling,
    Precision,
    Provider,
    TokenizerInfo,
    Variant,
    sha256_file,
)
from dmeta_embed.runtime.batching import pad, plan_batches
from dmeta_embed.variant_records import (
    Activations,
    EngineProperties,
    InferencePrecision,
    Int8Recipe,
    Speed,
    ValidatedCpu,
)


def _manifest() -> Manifest:
    fid = Fidelity(
        min_cos=0.991,
        mean_cos=0.996,
        max_abs_diff=0.01,
        n_texts=20,
        max_tokens=1024,
        bar_min_cos=BARS[Precision.INT8].min_cos,
        bar_mean_cos=BARS[Precision.INT8].mean_cos,
    )
    v = Variant(
        precision=Precision.INT8,
        file="model.int8.onnx",
        sha256="ab" * 32,
        size_bytes=123,
        provider=Provider.CPU,
        fidelity=fid,
        kept_float={"n1": "sensitivity 1e-3"},
        ops={"MatMulInteger": 3},
    )
    return Manifest(
        source={"model": "x", "revision": None},
        pooling=Pooling.CLS,
        normalize=True,
        max_length=1024,
        dim=768,
        tokenizer=TokenizerInfo("tokenizer.json", 0),
        inputs=("input_ids", "attention_mask"),
        output="sentence_embedding",
        variants={"int8": v},
        export={"opset": 17},
    )


def test_round_trip(tmp_path):
    m = _manifest()
    m.save(tmp_path)
    loaded = Manifest.load(tmp_path)
    assert loaded == m
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["format_version"] == FORMAT_VERSION
    assert raw["pooling"] == "cls"
    assert raw["variants"]["int8"]["fidelity"]["passed"] is True
    assert raw["variants"]["int8"]["kept_float"] == {"n1": "sensitivity 1e-3"}


def test_old_int8_ov_entries_that_named_the_openvino_ep_still_load(tmp_path):
    """Folders exported before int8-ov named OpenVINO's own runtime recorded onnxruntime's EP
    name; they load, and read in today's vocabulary (what runs the file: OpenVINO)."""
    d = _manifest().to_dict()
    old = d["variants"]["int8"] | {
        "precision": "int8-ov",
        "file": "model.int8-ov.onnx",
        "provider": "OpenVINOExecutionProvider",
    }
    d["variants"] = {"int8": d["variants"]["int8"], "int8-ov": old}
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    m = Manifest.load(tmp_path)
    ov, i8 = m.variants["int8-ov"], m.variants["int8"]
    assert (ov.provider, ov.provider.engine) == (Provider.OPENVINO, "openvino")
    assert (i8.provider, i8.provider.engine) == (Provider.CPU, "onnxruntime")
    assert Provider.parse("OpenVINOExecutionProvider") is Provider.parse("openvino") is Provider.OPENVINO
    m.save(tmp_path)  # and a re-save writes the new name only
    assert '"OpenVINOExecutionProvider"' not in (tmp_path / "manifest.json").read_text()
    assert (
        json.loads((tmp_path / "manifest.json").read_text())["variants"]["int8-ov"]["provider"] == "openvino"
    )


def test_an_unknown_provider_is_a_malformed_manifest() -> None:
    d = _manifest().to_dict()
    d["variants"]["int8"]["provider"] = "ROCmExecutionProvider"
    with pytest.raises(ModelLoadError, match="unknown provider"):
        Manifest.from_dict(d)


# -- every folder exported since the first release reads; today's writes back unchanged -------------

FIDELITY = {
    "min_cos": 0.9996,
    "mean_cos": 0.9998,
    "max_abs_diff": 0.0102,
    "n_texts": 24,
    "max_tokens": 1024,
    "bar_min_cos": 0.99,
    "bar_mean_cos": 0.995,
    "batch_min_cos": 1.0,
    "passed": True,
}
CPU = {
    "cpu_class": "amx",
    "vendor": "GenuineIntel",
    "model": "Intel(R) Xeon(R) Processor",
    "arch": "x86_64",
    "int8_weights": "s8",
}


def _entry(precision: str, file: str, provider: str, **fields: object) -> dict:
    """A variant entry in the key order today's export writes."""
    return {
        "precision": precision,
        "file": file,
        "sha256": "ab" * 32,
        "size_bytes": 123,
        "provider": provider,
        "fidelity": FIDELITY,
        "kept_float": {},
        "ops": {"MatMul": 6},
        "validated_on": "CPUExecutionProvider",
        "validated_cpu": CPU,
        "engine_properties": {},
        "int8_tensors": 0,
        "speed": {},
        "int8": {},
    } | fields


#: a manifest as this version's export writes it: every variant, every record filled in
TODAY = {
    "format_version": FORMAT_VERSION,
    "source": {"model": "x", "revision": None, "model_type": "bert"},
    "pooling": "cls",
    "normalize": True,
    "max_length": 1024,
    "dim": 64,
    "tokenizer": {"file": "tokenizer.json", "pad_token_id": 0, "padding_side": "right"},
    "inputs": ["input_ids", "attention_mask"],
    "output": "sentence_embedding",
    "variants": {
        "fp32": _entry(
            "fp32",
            "model.onnx",
            "CPUExecutionProvider",
            speed={
                "cpu_class": "amx",
                "tokens_per_s": 184137,
                "vs_fp32": 1.0,
                "engine": "onnxruntime",
                "query_ms": 0.068,
            },
        ),
        # not timed at export: speed {}
        "fp16": _entry("fp16", "model.fp16.onnx", "CUDAExecutionProvider"),
        "int8": _entry(
            "int8",
            "model.int8.onnx",
            "CPUExecutionProvider",
            kept_float={"Attention_0/qkv": "fp32: damage 1.02e-02 (rank 3 of 8)"},
            int8_tensors=10,
            speed={
                "cpu_class": "amx",
                "tokens_per_s": 108963,
                "vs_fp32": 0.592,
                "engine": "onnxruntime",
                "query_ms": 0.165,
            },
            int8={
                "activations": "per-row",
                "smoothing": 0.5,
                "weights": {"s7": 3, "s8": 2},
                "asymmetric_rows": 5,
                "promoted": {"Attention_1/qkv": "s8/asym: damage 9.33e-03 (rank 4 of 8)"},
                "trials": 9,
            },
        ),
        # int8-ov kept with f32 float parts: bf16's rate beside it, float weights with reasons
        "int8-ov": _entry(
            "int8-ov",
            "model.int8-ov.onnx",
            "openvino",
            kept_float={"q1": "role ffn_output: min cos 0.98"},
            validated_on="openvino 2026.4.1 CPU",
            engine_properties={"INFERENCE_PRECISION_HINT": "f32"},
            speed={
                "cpu_class": "amx",
                "tokens_per_s": 250000,
                "vs_fp32": 1.358,
                "engine": "openvino",
                "query_ms": 0.21,
                "bf16_tokens_per_s": 240000,
            },
            int8={"float_weights": {"m1": "weights float: min cos 0.9896"}},
        ),
        "bf16": _entry(
            "bf16",
            "model.onnx",
            "openvino",
            validated_on="openvino 2026.4.1 CPU",
            engine_properties={"INFERENCE_PRECISION_HINT": "bf16"},
            speed={
                "cpu_class": "amx",
                "tokens_per_s": 310000,
                "vs_fp32": 1.684,
                "engine": "openvino",
                "query_ms": 0.12,
            },
        ),
    },
    "export": {"opset": 17, "wall_seconds": 3.74},
    "prompts": {"query": "query: "},
    "default_prompt_name": None,
    "similarity_fn_name": "cosine",
    "truncate_dims": [32],
}


def test_todays_manifest_reads_typed_and_writes_back_the_same_json() -> None:
    m = Manifest.from_dict(json.loads(json.dumps(TODAY)))
    assert json.dumps(m.to_dict(), indent=2) == json.dumps(TODAY, indent=2)
    fp32, fp16, i8, ov, bf16 = (m.variants[k] for k in ("fp32", "fp16", "int8", "int8-ov", "bf16"))
    assert [v.provider for v in m.variants.values()] == [
        Provider.CPU,
        Provider.CUDA,
        Provider.CPU,
        Provider.OPENVINO,
        Provider.OPENVINO,
    ]
    assert i8.validated_cpu == ValidatedCpu(
        "amx", "GenuineIntel", "Intel(R) Xeon(R) Processor", "x86_64", "s8"
    )
    assert i8.speed == Speed("amx", 108963, 0.592, "onnxruntime", query_ms=0.165)
    assert i8.speed.slower_than_fp32_on("amx") and not i8.speed.slower_than_fp32_on("avx2")
    assert (i8.speed.figure_on("amx", "query_ms"), i8.speed.figure_on("avx2", "tokens_per_s")) == (
        0.165,
        None,
    )
    assert i8.int8.per_row and i8.int8.activations == Activations.PER_ROW and not i8.int8.saturation_free
    assert ov.engine_properties.precision_hint == InferencePrecision.F32 and not ov.engine_properties.bf16
    assert ov.engine_properties.config() == {"INFERENCE_PRECISION_HINT": "f32"}
    assert ov.speed.bf16_tokens_per_s == 240000 and ov.int8.float_weights == {
        "m1": "weights float: min cos 0.9896"
    }
    assert bf16.engine_properties.bf16 and bf16.file == fp32.file
    assert not fp16.speed.measured and fp16.speed.figure_on("amx", "tokens_per_s") is None
    assert fp32.engine_properties.config() == {} and fp32.int8 == Int8Recipe()


def _variant(d: dict, key: str) -> dict:
    return {**d, "variants": {key: d["variants"][key]}}


@pytest.mark.parametrize(
    "older",
    [
        # speed before query_ms was measured (and without the engine, as a hand-written record)
        {"cpu_class": "avx2", "tokens_per_s": 900, "vs_fp32": 0.9, "engine": "onnxruntime"},
        {"cpu_class": "avx2", "tokens_per_s": 900.5, "vs_fp32": 0.9},
    ],
    ids=["no-query-ms", "no-engine"],
)
def test_older_speed_records_write_back_unchanged(older: dict) -> None:
    d = _variant(TODAY, "int8")
    d["variants"]["int8"] = d["variants"]["int8"] | {"speed": older}
    v = Manifest.from_dict(d).variants["int8"]
    assert v.speed.query_ms is None and v.speed.figure_on("avx2", "query_ms") is None
    assert v.speed.figure_on("avx2", "tokens_per_s") == older["tokens_per_s"]
    assert v.to_dict()["speed"] == older


@pytest.mark.parametrize(
    "recipe",
    [
        # per-row int8 before asymmetric rows were counted; every MatMul fp32, none promoted
        {"activations": "per-row", "smoothing": 0.5, "weights": {"s8": 8}, "promoted": {}, "trials": 3},
        {
            "activations": "per-row",
            "smoothing": 0.5,
            "weights": {},
            "asymmetric_rows": 0,
            "promoted": {},
            "trials": 1,
        },
    ],
    ids=["no-asymmetric-rows", "all-fp32"],
)
def test_older_int8_recipes_write_back_unchanged(recipe: dict) -> None:
    d = _variant(TODAY, "int8")
    d["variants"]["int8"] = d["variants"]["int8"] | {"int8": recipe}
    assert Manifest.from_dict(d).variants["int8"].to_dict()["int8"] == recipe


#: a manifest as the first release wrote it: no speed, int8, validated_cpu, engine_properties,
#: int8_tensors, batch_min_cos, prompts...; ``kept_fp32`` for what stayed float
FIRST_RELEASE = {
    "format_version": 1,
    "source": {"model": "x", "revision": None},
    "pooling": "cls",
    "normalize": True,
    "max_length": 1024,
    "dim": 64,
    "tokenizer": {"file": "tokenizer.json", "pad_token_id": 0, "padding_side": "right"},
    "inputs": ["input_ids", "attention_mask"],
    "output": "sentence_embedding",
    "variants": {
        name: {
            "precision": name,
            "file": file,
            "sha256": "ab" * 32,
            "size_bytes": 123,
            "provider": provider,
            "fidelity": {k: v for k, v in FIDELITY.items() if k != "batch_min_cos"},
            "kept_fp32": {"n1": "sensitivity 1e-3"} if name == "int8" else {},
            "ops": {"MatMul": 6},
            "validated_on": "CPUExecutionProvider",
        }
        for name, file, provider in (
            ("fp32", "model.onnx", "CPUExecutionProvider"),
            ("fp16", "model.fp16.onnx", "CUDAExecutionProvider"),
            ("int8", "model.int8.onnx", "CPUExecutionProvider"),
        )
    },
    "export": {"opset": 17},
}


def test_a_first_release_manifest_reads_with_defaults() -> None:
    m = Manifest.from_dict(json.loads(json.dumps(FIRST_RELEASE)))
    i8 = m.variants["int8"]
    assert i8.kept_float == {"n1": "sensitivity 1e-3"} and i8.provider == Provider.CPU
    # not measured, not recorded: nothing a decision could read as a measurement
    assert (i8.speed, i8.int8, i8.validated_cpu, i8.engine_properties) == (
        Speed(),
        Int8Recipe(),
        ValidatedCpu(),
        EngineProperties(),
    )
    assert not i8.speed.measured and not i8.speed.slower_than_fp32_on("amx")
    assert not i8.int8.per_row and not i8.int8.saturation_free  # per-tensor, s8: shifted where needed
    assert not i8.validated_cpu.recorded and i8.engine_properties.config() == {}
    assert i8.fidelity.batch_min_cos is None and i8.int8_tensors == 0
    written = m.to_dict()
    entry = written["variants"]["int8"]
    assert "kept_fp32" not in entry and entry["kept_float"] == {"n1": "sensitivity 1e-3"}
    assert (entry["speed"], entry["int8"], entry["validated_cpu"], entry["engine_properties"]) == (
        {},
        {},
        {},
        {},
    )
    assert Manifest.from_dict(written) == m  # and the rewritten file reads back the same
    assert Manifest.from_dict(written).to_dict() == written


def test_engine_properties_keep_what_they_do_not_type() -> None:
    d = {"INFERENCE_PRECISION_HINT": "bf16", "NUM_STREAMS": "2"}
    props = EngineProperties.from_dict(d)
    assert props.precision_hint == InferencePrecision.BF16 and props.other == (("NUM_STREAMS", "2"),)
    assert props.config() == d and props.to_dict() == d
    f32 = props.with_precision_hint(InferencePrecision.F32)
    assert f32.config() == {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": "2"} and props.bf16
    assert EngineProperties.from_dict({"NUM_STREAMS": "2"}).config() == {"NUM_STREAMS": "2"}


@pytest.mark.parametrize(
    "weights,free",
    [({"s7": 6, "u8": 2}, True), ({"s8a7": 4}, True), ({"s8": 1, "s7": 7}, False), ({}, False)],
)
def test_saturation_free_means_no_8_bit_s8_weights(weights: dict, free: bool) -> None:
    assert Int8Recipe(Activations.PER_ROW, weights=weights).saturation_free is free


def test_speed_figures_name_what_exists() -> None:
    with pytest.raises(ValueError, match="no speed figure"):
        Speed("amx", 1, 1.0).figure_on("amx", "vs_fp32")


def test_fidelity_passed_uses_both_bars():
    base = dict(max_abs_diff=0.0, n_texts=1, max_tokens=1, bar_min_cos=0.99, bar_mean_cos=0.995)
    assert Fidelity(min_cos=0.99, mean_cos=0.995, **base).passed
    assert not Fidelity(min_cos=0.9899, mean_cos=0.999, **base).passed
    assert not Fidelity(min_cos=0.999, mean_cos=0.9949, **base).passed


def test_newer_format_is_refused(tmp_path):
    d = _manifest().to_dict() | {"format_version": FORMAT_VERSION + 1}
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ModelLoadError, match="newer"):
        Manifest.load(tmp_path)


@pytest.mark.parametrize("breakage", ["not json{", "[1, 2]", '{"format_version": 1}'])
def test_malformed_manifest(tmp_path, breakage):
    (tmp_path / "manifest.json").write_text(breakage)
    with pytest.raises(ModelLoadError):
        Manifest.load(tmp_path)


def test_missing_manifest(tmp_path):
    with pytest.raises(ModelLoadError, match="no manifest.json"):
        Manifest.load(tmp_path)


def test_sha256(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_plan_batches_covers_everything_once_within_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 600, size=1000)
    batches = plan_batches(lengths, max_batch_tokens=4096, batch_size=64)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    for b in batches:
        assert len(b) <= 64
        assert len(b) == 1 or len(b) * lengths[b].max() <= 4096
    # longest first, and each batch holds similar lengths (sorted order)
    maxes = [int(lengths[b].max()) for b in batches]
    assert maxes == sorted(maxes, reverse=True)


def test_plan_batches_keeps_padding_bounded():
    lengths = np.array([256, 10, 12, 9, 11, 130, 64, 8, 200, 10])
    batches = plan_batches(lengths, max_batch_tokens=100_000, batch_size=64)
    for b in batches:
        assert lengths[b].min() * 2 >= lengths[b].max()  # nobody padded to over twice their length
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    assert [lengths[b].max() for b in batches] == [256, 64, 12]


def test_plan_batches_keeps_padding_bounded_on_random_lengths() -> None:
    """The server relies on the runtime's batch planning to keep merged requests' padding < 2×."""
    lengths = np.random.default_rng(1).integers(3, 300, 500)
    groups = plan_batches(lengths, max_batch_tokens=8192, batch_size=128)
    assert sorted(np.concatenate(groups).tolist()) == list(range(500))
    for g in groups:
        assert lengths[g].min() * 2 >= lengths[g].max()


def test_plan_batches_oversized_text_gets_own_batch():
    batches = plan_batches(np.array([5000, 3, 4]), max_batch_tokens=100, batch_size=8)
    assert [b.tolist() for b in batches] == [[0], [2, 1]]
    assert [b.tolist() for b in plan_batches(np.array([7]), 1, 1)] == [[0]]


def test_pad_right():
    ids, mask = pad([[1, 2, 3], [4], [5, 6]], np.array([2, 1]), pad_id=0)
    assert ids.tolist() == [[5, 6], [4, 0]]
    assert mask.tolist() == [[1, 1], [1, 0]]
    assert ids.dtype == np.int64 and mask.dtype == np.int64
