"""The export extra states ranges, and the second environment (make test-tf5) is really on 5.x."""

from __future__ import annotations

import importlib.metadata as md
import os
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
#: set by `make test-tf5`: the transformers major version that environment is for
EXPECT = os.environ.get("DMETA_EXPECT_TRANSFORMERS")
only_tf5 = pytest.mark.skipif(not EXPECT, reason="runs in make test-tf5 (DMETA_EXPECT_TRANSFORMERS unset)")


def _export_extra() -> dict[str, str]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    out = {}
    for req in extras["export"]:
        name = re.match(r"[A-Za-z0-9_.-]+", req)
        assert name, req
        out[name.group(0).lower()] = req[name.end() :].strip()
    return out


def test_export_extra_states_ranges_not_pins():
    # a user's own torch (a CUDA build) or transformers 5 must satisfy the extra as it is
    spec = _export_extra()
    assert "==" not in spec["torch"] and spec["torch"].startswith(">=2.4")
    assert "==" not in spec["transformers"]
    assert ">=4.44" in spec["transformers"] and "<6" in spec["transformers"]


@only_tf5
def test_transformers_is_on_the_expected_major_line():
    import transformers

    assert transformers.__version__.split(".")[0] == EXPECT, (
        f"make test-tf5 runs transformers {transformers.__version__}, not {EXPECT}.x: "
        "a package in that venv pulled it back"
    )


@only_tf5
def test_sentence_transformers_fits_transformers_5():
    # sentence-transformers 6 is what GPU hosts ship beside transformers 5; optimum-onnx (<4.58)
    # must not be in this environment, or pip would have downgraded transformers to fit it
    assert int(md.version("sentence-transformers").split(".")[0]) >= 6
    with pytest.raises(md.PackageNotFoundError):
        md.version("optimum-onnx")


@pytest.mark.parametrize(
    "ort, tf, hinted",
    [
        ("1.30.0", "5.17.0", True),
        ("1.31.1", "5.17.0", False),
        ("1.32.0", "5.24.0", False),
        ("1.30.0", "4.57.6", False),
    ],
)
def test_attention_fusion_hint_names_the_onnxruntime_to_install(monkeypatch, ort, tf, hinted):
    # onnxruntime 1.30 fuses no Attention in transformers 5's BERT graph (1.31 does): the export's
    # warning then says which onnxruntime to install
    onnxruntime = pytest.importorskip("onnxruntime")
    transformers = pytest.importorskip("transformers")
    from dmeta_embed.export.graph import attention_fusion_hint

    monkeypatch.setattr(onnxruntime, "__version__", ort)
    monkeypatch.setattr(transformers, "__version__", tf)
    hint = attention_fusion_hint()
    assert bool(hint) is hinted
    if hinted:
        assert f"onnxruntime {ort}" in hint and "onnxruntime>=1.31" in hint
