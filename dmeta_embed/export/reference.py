"""The PyTorch reference every variant is measured against, and the fidelity metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..manifest import Bar, Fidelity, Pooling
from .progress import Progress


def torch_embeddings(
    model_dir: Path,
    texts: list[str],
    pooling: Pooling,
    normalize: bool,
    max_length: int,
    batch_size: int = 8,
    trust_remote_code: bool = False,
) -> np.ndarray:
    """transformers + torch fp32 with the same pooling and normalisation as the graph head."""
    import torch
    from transformers import AutoTokenizer

    from .graph import load_model

    tok = AutoTokenizer.from_pretrained(model_dir, use_fast=True, trust_remote_code=trust_remote_code)
    model = load_model(model_dir, trust_remote_code)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    progress = Progress("reference batches", -(-len(order) // batch_size))
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            enc = tok(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
                return_token_type_ids=False,
            )
            h = model(**enc).last_hidden_state
            mask = enc["attention_mask"]
            if pooling == Pooling.CLS:
                v = h[:, 0]
            elif pooling == Pooling.MEAN:
                m = mask.unsqueeze(-1).to(h.dtype)
                v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            else:
                last = mask.sum(1) - 1
                v = h[torch.arange(h.shape[0]), last]
            if normalize:
                v = torch.nn.functional.normalize(v, p=2, dim=-1)
            out[idx] = v.numpy()
            progress.step()
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [n, d] arrays (no assumption that rows are normalised)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    num = (a64 * b64).sum(1)
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return num / np.maximum(den, 1e-30)  # type: ignore[no-any-return]


def fidelity(candidate: np.ndarray, reference: np.ndarray, bar: Bar, max_tokens: int) -> Fidelity:
    c = cosines(candidate, reference)
    return Fidelity(
        min_cos=float(c.min()),
        mean_cos=float(c.mean()),
        max_abs_diff=float(np.abs(candidate - reference).max()),
        n_texts=len(c),
        max_tokens=max_tokens,
        bar_min_cos=bar.min_cos,
        bar_mean_cos=bar.mean_cos,
    )
