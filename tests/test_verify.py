"""``dmeta-embed verify``: each variant against the source model on the user's own texts, checked
against an independent computation (transformers run here by hand, numpy cosines)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dmeta_embed import Embedder
from dmeta_embed.cli import cli
from dmeta_embed.errors import InputError, MissingDependencyError
from dmeta_embed.export.verify import read_texts, report, verify
from dmeta_embed.manifest import MANIFEST_NAME, Manifest

TEXTS = [
    "胡子长得太快怎么办？",
    "在香港哪里买手表好",
    "，，，。。。！！",
    "😀😀😀",
    "word " * 40,
    "3.14159 2.71828",
    "a",
]


def by_hand(src: Path, texts: list[str], max_length: int) -> np.ndarray:
    """CLS vectors, L2-normalised, from transformers directly (the tiny model's pooling)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModel.from_pretrained(src, attn_implementation="eager").eval()
    out = []
    with torch.no_grad():
        for t in texts:  # one at a time: no padding at all
            enc = tok([t], truncation=True, max_length=max_length, return_tensors="pt")
            v = model(**enc).last_hidden_state[:, 0].numpy()[0]
            out.append(v / np.linalg.norm(v))
    return np.stack(out)


def test_verify_reports_each_variants_tail_as_computed_by_hand(tiny_src, tiny_export):
    m = Manifest.load(tiny_export)
    assert m.pooling.value == "cls" and m.normalize and not m.default_prompt_name
    ref = by_hand(tiny_src, TEXTS, m.max_length)
    checks = {c.variant: c for c in verify(tiny_export, TEXTS)}
    assert set(checks) == set(m.variants)
    for name, c in checks.items():
        got = Embedder.load(tiny_export, variant=name).encode(TEXTS)
        cos = (got.astype(np.float64) * ref).sum(1) / np.linalg.norm(got.astype(np.float64), axis=1)
        assert c.cos.shape == (len(TEXTS),)
        np.testing.assert_allclose(c.cos, cos, atol=2e-5)
        assert c.min_cos == pytest.approx(cos.min(), abs=2e-5)
        assert c.mean_cos == pytest.approx(cos.mean(), abs=2e-5)
        assert c.p1_cos == pytest.approx(np.percentile(cos, 1), abs=2e-5)
        fid = m.variants[name].fidelity
        assert (c.bar_min_cos, c.bar_mean_cos) == (fid.bar_min_cos, fid.bar_mean_cos)
        assert c.meets == (cos.min() >= fid.bar_min_cos and cos.mean() >= fid.bar_mean_cos)
        worst = c.worst(TEXTS, k=3)
        assert [w["index"] for w in worst] == list(np.argsort(c.cos, kind="stable")[:3])
    d = json.loads(json.dumps(report(list(checks.values()), TEXTS)))
    assert d["texts"] == len(TEXTS)
    fp32 = d["variants"]["fp32"]
    assert set(fp32) >= {"min_cos", "p1_cos", "mean_cos", "bar", "meets", "worst"}
    assert fp32["meets"] is True and fp32["min_cos"] > 0.9999


@pytest.fixture
def strict_copy(tiny_export, tmp_path) -> Path:
    """The tiny export with int8's bar raised past 1: int8 must miss it on any text."""
    out = tmp_path / "strict"
    shutil.copytree(tiny_export, out)
    raw = json.loads((out / MANIFEST_NAME).read_text())
    raw["variants"]["int8"]["fidelity"]["bar_min_cos"] = 1.01
    (out / MANIFEST_NAME).write_text(json.dumps(raw))
    return out


def test_cli_exits_1_when_a_variant_misses_its_bar(strict_copy, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n\n", "utf-8")
    r = CliRunner().invoke(cli, ["verify", str(strict_copy), "--texts", str(texts), "--json"])
    assert r.exit_code == 1, r.output
    d = json.loads(r.stdout)
    assert d["texts"] == len(TEXTS)  # the blank lines skipped
    assert d["variants"]["int8"]["meets"] is False and d["variants"]["int8"]["bar"]["min_cos"] == 1.01
    assert d["variants"]["fp32"]["meets"] is True
    ok = CliRunner().invoke(cli, ["verify", str(strict_copy), "--texts", str(texts), "--variants", "fp32"])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(cli, ["verify", str(strict_copy), "--texts", str(texts), "--variants", "fp64"])
    assert bad.exit_code == 1 and "fp64" in str(bad.exception)


def test_bad_texts_file_is_an_input_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", "utf-8")
    with pytest.raises(InputError) as e:
        read_texts(empty)
    assert e.value.field == "texts"
    with pytest.raises(InputError):
        read_texts(tmp_path / "missing.txt")


def test_without_the_export_extra_verify_names_the_install(tiny_export, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependencyError) as e:
        verify(tiny_export, TEXTS)
    assert "pip install 'dmeta-embed[export]'" in str(e.value)


def test_cli_missing_extra_is_one_line(tiny_export, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("hello\n", "utf-8")
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from dmeta_embed.cli import main\n"
        f"sys.argv = ['dmeta-embed', 'verify', {str(tiny_export)!r}, '--texts', {str(texts)!r}]\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("Error:") and "dmeta-embed[export]" in r.stderr
