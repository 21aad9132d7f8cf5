"""mteb 2.x: DmetaEncoder scores local tasks through mteb.evaluate; fp32 and int8 of the real MiniLM
score close (the variants table's arithmetic is the harness's, tested in test_bench.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mteb", reason="needs the mteb extra: pip install 'dmeta-embed[mteb]'")
sys.path.insert(0, str(Path(__file__).parent))

from mteb_local_tasks import PAIRS, LocalRetrieval, LocalSTS  # noqa: E402

from dmeta_embed import Embedder  # noqa: E402
from dmeta_embed.integrations.mteb import DmetaEncoder, model_meta  # noqa: E402


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
def test_minilm_fp32_and_int8_scores_close(minilm_export: Path) -> None:
    import mteb

    s = {}
    for variant in ("fp32", "int8"):
        result = mteb.evaluate(
            DmetaEncoder(minilm_export, variant=variant),
            [LocalRetrieval(), LocalSTS()],
            cache=None,
            show_progress_bar=False,
            co2_tracker=False,
        )
        s[variant] = {r.task_name: float(r.get_score()) for r in result.task_results}
    print(json.dumps(s))
    # all-MiniLM-L6-v2 finds every answer of this easy set first, and ranks the STS pairs well
    assert s["fp32"]["DmetaLocalRetrieval"] == pytest.approx(1.0, abs=0.02)
    assert s["fp32"]["DmetaLocalSTS"] > 0.85
    for task in ("DmetaLocalRetrieval", "DmetaLocalSTS"):
        assert abs(s["int8"][task] - s["fp32"][task]) <= 0.02, (task, s)
