"""Per-call facts (``Embedder.embed``), truncation reported once, quantized precisions checked
against sentence-transformers' ``quantize_embeddings``, and imports that need no engine."""

from __future__ import annotations

import logging
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from dmeta_embed import Embedder, InputError
from dmeta_embed.texts import calibration_texts

LONG = "深度学习" * 600  # 2400 chars: past the tiny model's 1024 tokens


@pytest.fixture(scope="module")
def fp32(tiny_export: Path) -> Embedder:
    return Embedder.load(tiny_export, variant="fp32")


def test_concurrent_calls_get_their_own_facts(fp32: Embedder) -> None:
    """Threads embedding different texts at once: each result's lengths, truncated indices and
    vectors are those of its own texts (compared with one call at a time)."""
    calls = [
        ["短", LONG, "中等长度的句子" * (i + 1)] if i % 2 else ["你好" * (i + 1)] * (i + 1) for i in range(12)
    ]
    alone = [fp32.embed(texts) for texts in calls]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda texts: fp32.embed(texts), calls * 3))
    for i, got in enumerate(together):
        want = alone[i % len(calls)]
        assert got.truncated == want.truncated == ((1,) if (i % len(calls)) % 2 else ())
        assert got.lengths.tolist() == want.lengths.tolist()
        assert got.lengths.tolist() == [len(ids) for ids in fp32.tokenizer.encode(calls[i % len(calls)]).ids]
        np.testing.assert_allclose(got.vectors, want.vectors, atol=1e-6)


def test_truncation_is_logged_once_per_embedder_with_a_count(tiny_export: Path, caplog) -> None:
    e = Embedder.load(tiny_export, variant="fp32")
    with caplog.at_level(logging.WARNING, logger="dmeta_embed"):
        for _ in range(3):
            e.encode(["短", LONG, LONG])
        e.encode(["短"])
    warned = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warned) == 1 and warned[0].getMessage().startswith("2 text(s) longer than max_length=1024")
    assert e.truncated_count == 6
    with pytest.raises(InputError, match=r"texts\[2\] is longer than max_length=1024"):
        e.encode(["短", "短", LONG], truncate=False)


def _st_quantize():  # type: ignore[no-untyped-def]
    util = pytest.importorskip("sentence_transformers.util")
    return util.quantize_embeddings


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_precisions_match_sentence_transformers(fp32: Embedder, precision: str) -> None:
    """The same floats give sentence-transformers' integers; int8/uint8 with the min/max of the
    built-in calibration texts (what the default ranges are documented to be), or with ranges or
    calibration embeddings the caller passes."""
    quantize_embeddings = _st_quantize()
    texts = calibration_texts()[:20] + ["你好", "Hello world", LONG]
    floats = fp32.encode(texts)
    calib = fp32.encode(calibration_texts())
    want = quantize_embeddings(floats, precision, calibration_embeddings=calib)
    got = fp32.encode(texts, precision=precision)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    if precision in ("binary", "ubinary"):
        assert got.shape == (len(texts), fp32.dim // 8)
        return
    # caller-given ranges, and caller-given calibration embeddings, as sentence-transformers takes them
    ranges = np.array([np.full(fp32.dim, -0.3), np.full(fp32.dim, 0.3)], dtype=np.float32)
    np.testing.assert_array_equal(
        fp32.encode(texts, precision=precision, ranges=ranges),
        quantize_embeddings(floats, precision, ranges=ranges),
    )
    np.testing.assert_array_equal(
        fp32.encode(texts, precision=precision, calibration_embeddings=floats[:5]),
        quantize_embeddings(floats, precision, calibration_embeddings=floats[:5]),
    )
    # a Matryoshka cut would need the model's dims; the calibration ranges follow renormalisation
    unit = fp32.encode(texts, normalize_embeddings=True)
    np.testing.assert_array_equal(
        fp32.encode(texts, precision=precision, normalize_embeddings=True),
        quantize_embeddings(unit, precision, calibration_embeddings=calib),
    )


def test_quantized_vector_does_not_depend_on_its_batch(fp32: Embedder) -> None:
    """sentence-transformers' own encode(precision=...) takes ranges from the batch; ours are fixed."""
    alone = fp32.encode(["你好"], precision="int8")
    batch = fp32.encode(["你好", LONG, "Hello"], precision="int8")
    np.testing.assert_array_equal(alone[0], batch[0])
    with pytest.raises(InputError, match="precision must be one of float32, int8, uint8, binary, ubinary"):
        fp32.encode(["x"], precision="int4")


def _blocked(modules: tuple[str, ...]) -> str:
    """Python source that makes importing (or finding) ``modules`` fail, as if not installed."""
    return (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {modules!r}:\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
    )


def test_cpu_choice_and_inspect_import_without_onnxruntime(tiny_export: Path) -> None:
    """An install with no onnxruntime (OpenVINO only, say): runtime.cpu and runtime.choice import,
    and ``dmeta-embed inspect`` prints the folder and says why auto cannot load here."""
    code = _blocked(("onnxruntime", "torch")) + (
        "import dmeta_embed.runtime.cpu, dmeta_embed.runtime.choice, dmeta_embed.runtime\n"
        "assert 'onnxruntime' not in sys.modules\n"
        "from dmeta_embed.cli import main\n"
        f"sys.argv = ['dmeta-embed', 'inspect', {str(tiny_export)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "assert 'onnxruntime' not in sys.modules and 'torch' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "fp32" in r.stdout and "this cpu" in r.stdout
    assert "auto      cannot load here:" in r.stdout and "onnxruntime is not installed" in r.stdout


def test_embedder_without_onnxruntime_names_the_install(tiny_export: Path) -> None:
    code = _blocked(("onnxruntime",)) + (
        "from dmeta_embed import Embedder, MissingDependencyError\n"
        "try:\n"
        f"    Embedder.load({str(tiny_export)!r}, variant='fp32')\n"
        "except MissingDependencyError as e:\n"
        "    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "onnxruntime is not installed; run: pip install 'dmeta-embed[cpu]'" in r.stdout


def test_auto_refuses_an_int8_that_missed_its_bar_and_by_name_warns(
    tiny_export: Path, tmp_path: Path, caplog
) -> None:
    """A folder whose only CPU variant is an int8 below its bar (as --allow-low-fidelity keeps):
    auto refuses it with the variant and how to ask for it; by name it loads, with the warning."""
    import json
    import shutil

    from dmeta_embed import ProviderError
    from dmeta_embed.runtime.choice import NothingToLoadError, Why

    folder = tmp_path / "low"
    shutil.copytree(tiny_export, folder)
    m = json.loads((folder / "manifest.json").read_text())
    m["variants"] = {k: v for k, v in m["variants"].items() if k == "int8"}
    m["variants"]["int8"]["fidelity"]["bar_min_cos"] = 1.01  # no min cos meets it
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ProviderError) as refused:
        Embedder.load(folder)
    assert isinstance(refused.value, NothingToLoadError)
    # (the export may also have measured it slower than fp32 here: a second objection, not a refusal)
    missed = [(o.variant.value, o.bar_min_cos) for o in refused.value.set_aside if o.why == Why.MISSED_BAR]
    assert missed == [("int8", 1.01)] and [p.value for p in refused.value.by_name] == ["int8"]
    assert "variant='int8' (CLI: --variant int8)" in str(refused.value)  # what the user types next
    with caplog.at_level(logging.WARNING, logger="dmeta_embed"):
        e = Embedder.load(folder, variant="int8")
    caveat = e.choice.caveat
    assert e.variant.value == "int8" and caveat is not None and caveat.why == Why.MISSED_BAR
    assert any(r.levelno == logging.WARNING and e.choice.warning in r.getMessage() for r in caplog.records)
