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
        provider="CPUExecutionProvider",
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
    assert (ov.provider, ov.engine) == ("openvino", "openvino")
    assert (i8.provider, i8.engine) == ("CPUExecutionProvider", "onnxruntime")
    assert Provider.parse("OpenVINOExecutionProvider") is Provider.parse("openvino") is Provider.OPENVINO
    m.save(tmp_path)  # and a re-save writes the new name only
    assert '"OpenVINOExecutionProvider"' not in (tmp_path / "manifest.json").read_text()


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
