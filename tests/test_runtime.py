"""Runtime API: order, shapes, batching invariance, tokenisation, variant choice, bad input."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest

from dmeta_embed import Embedder, InputError, ModelLoadError, ProviderError
from dmeta_embed.export.reference import cosines, torch_embeddings
from dmeta_embed.manifest import Manifest, Pooling, Precision
from dmeta_embed.runtime.choice import Int8Feed, choose
from dmeta_embed.runtime.cpu import cpu_info, detect
from dmeta_embed.runtime.installed import installed
from dmeta_embed.texts import EN, MIXED, ZH
from tests.helpers import assert_same_tokens_as_hf, mixed_texts


@pytest.fixture(scope="module")
def fp32(tiny_export):
    return Embedder.load(tiny_export, variant="fp32", provider="cpu")


@pytest.fixture(scope="module")
def int8(tiny_export):
    return Embedder.load(tiny_export, variant="int8", provider="cpu")


def test_shapes_and_dtype(fp32):
    e = fp32.encode(ZH[:3])
    assert e.shape == (3, 64) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert fp32.encode([]).shape == (0, 64)
    single = fp32.encode(ZH[0])
    assert single.shape == (64,)  # like sentence-transformers: one str → one vector
    np.testing.assert_allclose(single, e[0], atol=1e-6)
    assert fp32.dim == 64 and fp32.max_length == 1024 and fp32.manifest.pooling == Pooling.CLS


def test_parity_with_torch(fp32, tiny_src):
    texts = mixed_texts(40, seed=3)
    ref = torch_embeddings(tiny_src, texts, Pooling.CLS, True, 1024)
    assert cosines(fp32.encode(texts), ref).min() >= 0.99999


def test_order_and_batch_size_invariance(fp32, int8):
    """fp32: exact up to float noise. int8: dynamic quantization picks one activation scale per
    batch tensor, so batch-mates move a text's vector slightly (measured on this random model,
    whose activations are wider than real ones: min cos ~0.991; MiniLM: see test_minilm)."""
    texts = mixed_texts(60, seed=1)
    for model, bar in ((fp32, 0.99999), (int8, 0.98)):
        base = model.encode(texts, batch_size=64)
        for bs in (1, 3, 17):
            assert cosines(model.encode(texts, batch_size=bs), base).min() >= bar
        perm = np.random.default_rng(0).permutation(len(texts))
        shuffled = model.encode([texts[i] for i in perm])
        assert cosines(shuffled, base[perm]).min() >= bar
        # the same text alone equals the same text inside a padded batch
        alone = np.stack([model.encode([texts[i]])[0] for i in range(5)])
        assert cosines(alone, base[:5]).min() >= bar
    # batch_size=1 makes int8 independent of batch-mates: bit-identical to each text alone
    np.testing.assert_array_equal(
        int8.encode(texts[:5], batch_size=1), np.stack([int8.encode([t])[0] for t in texts[:5]])
    )


def test_outputs_are_distinct_per_text(fp32):
    e = fp32.encode(ZH[:6])
    sims = e @ e.T
    assert (sims[~np.eye(6, dtype=bool)] < 0.995).all()  # rows are not all the same vector


def test_tokenisation_identical_to_hf(tiny_export, tiny_src):
    assert_same_tokens_as_hf(tiny_export, tiny_src)


def test_count_tokens_and_truncation(fp32, caplog):
    long = "深度学习" * 600  # 2400 chars → truncated at 1024
    assert fp32.count_tokens(["你好", long]) == [4, 1024]
    before = fp32.truncated_count
    with caplog.at_level(logging.WARNING):
        e = fp32.encode(["你好", long, "好"])
        res = fp32.embed(["你好", long, "好"])
    assert e.shape == (3, 64)
    np.testing.assert_array_equal(res.vectors, e)
    assert res.truncated == (1,)
    assert res.lengths.tolist() == fp32.count_tokens(["你好", long, "好"]) == [4, 1024, 3]
    assert fp32.truncated_count == before + 2
    with pytest.raises(InputError, match=r"texts\[1\] is longer than max_length=1024") as ei:
        fp32.encode(["你好", long], truncate=False)
    assert ei.value.index == 1


def test_hundred_thousand_chars(fp32):
    res = fp32.embed(["字" * 100_000, "短"])
    assert res.vectors.shape == (2, 64) and np.isfinite(res.vectors).all()
    assert res.truncated == (0,) and res.lengths.tolist() == [1024, 3]


@pytest.mark.parametrize(
    "bad,index,msg",
    [
        ([ZH[0], None], 1, r"texts\[1\] is NoneType, expected str"),
        ([ZH[0], ZH[1], 3], 2, r"texts\[2\] is int"),
        ([b"bytes"], 0, r"texts\[0\] is bytes; decode it"),
        (["ok", "bad \ud800 surrogate"], 1, r"texts\[1\] is not valid Unicode"),
    ],
)
def test_bad_items_name_their_index(fp32, bad, index, msg):
    with pytest.raises(InputError, match=msg) as ei:
        fp32.encode(bad)
    assert ei.value.index == index


def test_none_input(fp32):
    with pytest.raises(InputError, match="texts is None"):
        fp32.encode(None)


def test_empty_whitespace_and_nul_are_valid(fp32):
    e = fp32.encode(["", "   ", "ab\x00c", "abc"])
    assert e.shape == (4, 64) and np.isfinite(e).all()
    np.testing.assert_allclose(e[2], e[3], atol=1e-6)  # the BERT normaliser drops control chars


def test_normalize_flags(fp32):
    assert fp32.encode(["x"], normalize_embeddings=True).shape == (1, 64)
    with pytest.raises(InputError, match="no-normalize"):
        fp32.encode(["x"], normalize_embeddings=False)


def test_convert_to_numpy_false_gives_list(fp32):
    out = fp32.encode(["a", "b"], convert_to_numpy=False)
    assert isinstance(out, list) and len(out) == 2 and out[0].shape == (64,)


def test_many_texts_in_order(fp32):
    texts = [f"第{i}条" for i in range(100_000)]
    e = fp32.encode(texts)
    assert e.shape == (100_000, 64)
    for i in (0, 4095, 4096, 50_000, 99_999):  # across chunk boundaries
        np.testing.assert_allclose(e[i], fp32.encode([texts[i]])[0], atol=1e-5)


def test_auto_follows_the_rule_for_this_cpu(tiny_export):
    """Whatever CPU runs the suite: auto is what ``choose`` says for the detected facts, the choice
    passed its bar, and it was not measured slower than fp32 on this CPU class."""
    emb = Embedder.load(tiny_export)
    m = Manifest.load(tiny_export)
    assert emb.choice == choose(m, cpu=detect(), installed=installed())
    assert emb.cpu == detect() and f"cpu={detect().cpu_class.value!r}" in repr(emb)
    v = m.variants[emb.variant.value]
    assert v.fidelity.passed and not v.speed.slower_than_fp32_on(detect().cpu_class.value)
    if emb.variant == Precision.INT8:
        assert emb.choice.int8_weights == detect().int8_weights


def test_int8_on_a_cpu_without_vnni_is_exact_and_meets_the_bar(tiny_export, monkeypatch, fp32):
    """Pretend an AVX2-only CPU: int8 loads with u8 weights (exact everywhere), or as exported when
    its weights never saturate (an export on such a CPU), and its vectors meet the int8 bar
    against fp32 on this machine too."""
    avx2 = cpu_info({"flags": "fpu sse4_2 avx avx2 fma"}, "x86_64")
    emb = Embedder.load(tiny_export, variant="int8", provider="cpu", cpu=avx2)
    if Manifest.load(tiny_export).variants["int8"].int8.saturation_free:
        assert (emb.choice.int8_weights, emb.choice.int8_feed) == ("s8", Int8Feed.SATURATION_FREE)
    else:
        assert (emb.choice.int8_weights, emb.choice.int8_feed) == ("u8", Int8Feed.SHIFTED_TO_U8)
    texts = ZH + EN + MIXED
    c = cosines(emb.encode(texts), fp32.encode(texts))
    assert c.min() >= 0.99 and c.mean() >= 0.995


def test_explicit_requests_that_cannot_be_met(tiny_export, tmp_path):
    with pytest.raises(ProviderError, match="provider='cuda'"):
        Embedder.load(tiny_export, provider="cuda")
    partial = tmp_path / "partial"
    shutil.copytree(tiny_export, partial)
    m = json.loads((partial / "manifest.json").read_text())
    del m["variants"]["int8"]
    (partial / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ProviderError, match="variant 'int8' is not in this folder"):
        Embedder.load(partial, variant="int8")
    assert Embedder.load(partial).variant.value == "fp32"  # auto falls back only when nothing was asked
    with pytest.raises(ProviderError, match="variant must be"):
        Embedder.load(tiny_export, variant="int4")


def test_auto_skips_int8_that_missed_its_bar(tiny_export, tmp_path):
    low = tmp_path / "low"
    shutil.copytree(tiny_export, low)
    m = json.loads((low / "manifest.json").read_text())
    m["variants"]["int8"]["fidelity"]["min_cos"] = 0.5
    (low / "manifest.json").write_text(json.dumps(m))
    assert Embedder.load(low).variant.value == "fp32"


def test_corrupted_and_missing_files(tiny_export, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_export, bad)
    with open(bad / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff\xff\xff")
    with pytest.raises(ModelLoadError, match="checksum mismatch"):
        Embedder.load(bad, variant="fp32")
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
        Embedder.load(bad, variant="fp32", verify=False)
    (bad / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="tokenizer.json is missing"):
        Embedder.load(bad, variant="int8")
    with pytest.raises(ModelLoadError, match="model folder not found"):
        Embedder.load(tmp_path / "nowhere")


def test_newer_manifest_format(tiny_export, tmp_path):
    new = tmp_path / "new"
    shutil.copytree(tiny_export, new)
    m = json.loads((new / "manifest.json").read_text())
    m["format_version"] = 99
    (new / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelLoadError, match="format_version 99 is newer"):
        Embedder.load(new)


def test_runtime_never_imports_torch(tiny_export):
    code = (
        "import sys\n"
        "from dmeta_embed import Embedder\n"
        f"e = Embedder.load({str(tiny_export)!r})\n"
        "v = e.encode(['胡子长得太快怎么办？'])\n"
        "assert v.shape == (1, 64)\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'optimum', 'onnx') if m in sys.modules)\n"
        "print(','.join(heavy) or 'clean')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "clean"


def test_threads_default_to_usable_cpus(monkeypatch, tmp_path):
    """The affinity mask and the cgroup quota (v2, else v1) cap the default thread count, with
    the machine's facts injected: 4 CPUs allowed, then quotas of 1.5, 0.5 and 2.5 CPUs."""
    from pathlib import Path

    from dmeta_embed.runtime import cpu, session

    monkeypatch.setattr(cpu, "Path", lambda p: Path(tmp_path, str(p).lstrip("/")))
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert cpu.available_cpus() == 4  # no cgroup files: the affinity mask
    v2 = tmp_path / "sys/fs/cgroup/cpu.max"
    v2.parent.mkdir(parents=True)
    for quota, want in (("max 100000", 4), ("150000 100000", 2), ("50000 100000", 1), ("900000 100000", 4)):
        v2.write_text(quota)
        assert cpu.available_cpus() == want, quota
    v2.write_text("150000 100000")
    assert session.session_options(None).intra_op_num_threads == 2
    assert session.session_options(3).intra_op_num_threads == 3  # an explicit count wins
    v2.unlink()
    v1 = tmp_path / "sys/fs/cgroup/cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_period_us").write_text("100000")
    for quota, want in (("250000", 3), ("-1", 4)):
        (v1 / "cpu.cfs_quota_us").write_text(quota)
        assert cpu.available_cpus() == want, quota
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: {0})
    assert cpu.available_cpus() == 1
