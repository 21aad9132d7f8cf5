"""mteb 2.x: DmetaEncoder scores local tasks through mteb.evaluate; fp32 and int8 of the real MiniLM
score close; the variants benchmark's table arithmetic."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mteb", reason="needs the mteb extra: pip install 'dmeta-embed[mteb]'")
sys.path.insert(0, str(Path(__file__).parent))

from mteb_local_tasks import PAIRS, LocalRetrieval, LocalSTS  # noqa: E402

from benchmarks import mteb_variants  # noqa: E402
from dmeta_embed import Embedder  # noqa: E402
from dmeta_embed.integrations.mteb import DmetaEncoder, model_meta  # noqa: E402


def test_deltas_and_table() -> None:
    scores = {"fp32": {"A": 0.80, "B": 0.50}, "int8": {"A": 0.79, "B": 0.52, "C": 0.1}}
    rows = mteb_variants.deltas(scores)
    assert [r["task"] for r in rows] == ["A", "B", "mean"]  # C: not scored by every variant
    assert rows[0]["int8 Δ"] == pytest.approx(-1.0) and rows[1]["int8 Δ"] == pytest.approx(2.0)
    assert rows[2]["fp32"] == pytest.approx(65.0) and rows[2]["int8 Δ"] == pytest.approx(0.5)
    md = mteb_variants.markdown(rows, "t")
    assert "| A | 80.00 | 79.00 | -1.00 |" in md and "| mean | 65.00 | 65.50 | +0.50 |" in md
    with pytest.raises(ValueError, match="base variant"):
        mteb_variants.deltas({"int8": {"A": 1.0}})


def test_model_meta_from_the_manifest(tiny_export: Path) -> None:
    e = Embedder.load(tiny_export, variant="fp32")
    meta = model_meta(e)
    assert meta.embed_dim == e.dim and meta.max_tokens == e.max_length
    assert meta.framework == ["ONNX"] and meta.experiment_kwargs == {"variant": "fp32"}
    assert meta.name == f"dmeta-embed/{tiny_export.name}" and meta.similarity_fn_name.value == "cosine"
    assert meta.memory_usage_mb == round(e.manifest.variants["fp32"].size_bytes / 2**20, 1)


def test_encode_follows_mteb_prompt_types(tiny_export: Path) -> None:
    import mteb
    from mteb.types import PromptType

    enc = DmetaEncoder(tiny_export, variant="fp32")
    enc.model.prompts = {"query": "Q: ", "document": "D: "}
    enc.model_prompts = dict(enc.model.prompts)
    texts = [q for q, _ in PAIRS[:5]]
    loader = [{"text": texts[:3]}, {"text": texts[3:]}]  # what mteb's DataLoader yields: batches
    meta = LocalRetrieval().metadata
    q = enc.encode(
        loader, task_metadata=meta, hf_split="test", hf_subset="default", prompt_type=PromptType.query
    )
    d = enc.encode(
        loader, task_metadata=meta, hf_split="test", hf_subset="default", prompt_type=PromptType.document
    )
    np.testing.assert_array_equal(q, enc.model.encode(["Q: " + t for t in texts]))
    np.testing.assert_array_equal(d, enc.model.encode(["D: " + t for t in texts]))
    assert mteb.__version__.startswith("2.")


@pytest.mark.slow
def test_minilm_fp32_and_int8_scores_close(minilm_export: Path, tmp_path: Path) -> None:
    result = mteb_variants.run(minilm_export, ["fp32", "int8"], [LocalRetrieval(), LocalSTS()])
    s = result["scores"]
    print(json.dumps(s))
    # all-MiniLM-L6-v2 finds every answer of this easy set first, and ranks the STS pairs well
    assert s["fp32"]["DmetaLocalRetrieval"] == pytest.approx(1.0, abs=0.02)
    assert s["fp32"]["DmetaLocalSTS"] > 0.85
    for task in ("DmetaLocalRetrieval", "DmetaLocalSTS"):
        assert abs(s["int8"][task] - s["fp32"][task]) <= 0.02, (task, s)
    js, md = mteb_variants.write(result, tmp_path)
    rows = json.loads(js.read_text())["rows"]
    assert rows[-1]["task"] == "mean" and "int8 Δ" in rows[0]
    assert "DmetaLocalSTS" in md.read_text()
