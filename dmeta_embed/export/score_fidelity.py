"""How close a reranker variant's scores are to PyTorch's on the probe pairs (``ScoreFidelity``):
the largest difference of the activated scores, each query's Spearman correlation and top-k
agreement, and a pair's scores alone vs in a batch. numpy only."""

from __future__ import annotations

import numpy as np

from ..rerank_records import Activation, ScoreBar, ScoreFidelity
from ..runtime.scores import activate

#: the k of the top-k agreement (each probe query has 13 documents)
TOP_K = 3


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of ``x`` (1..n), ties given their mean rank (Spearman's convention)."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x), dtype=np.float64)
    r[order] = np.arange(1, len(x) + 1)
    values = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or values[end] != values[start]:
            r[order[start:end]] = (start + end + 1) / 2
            start = end
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two score lists; 1 when both are constant, 0 when one is."""
    ra, rb = ranks(a), ranks(b)
    sa, sb = ra.std(), rb.std()
    if sa == 0 or sb == 0:
        return 1.0 if sa == sb else 0.0
    return float(((ra - ra.mean()) * (rb - rb.mean())).mean() / (sa * sb))


def topk_agreement(candidate: np.ndarray, reference: np.ndarray, k: int, tolerance: float) -> float:
    """The share of ``candidate``'s top ``k`` whose reference score reaches the reference's k-th
    best less ``tolerance``: a document swapped with one the reference scores within the bar's
    difference is a tie, not a disagreement."""
    k = min(k, len(reference))
    kth = np.sort(reference)[::-1][k - 1]
    picked = np.argsort(-candidate, kind="stable")[:k]
    return float(np.mean(reference[picked] >= kth - tolerance))


def score_fidelity(
    candidate: np.ndarray,
    reference: np.ndarray,
    queries: np.ndarray,
    activation: Activation,
    bar: ScoreBar,
    max_tokens: int,
) -> ScoreFidelity:
    """``candidate`` logits (n, labels) against ``reference`` logits, compared as activated scores
    (the manifest's activation: what a caller reads), per query of ``queries`` (each pair's)."""
    c, r = (
        activate(candidate, activation).astype(np.float64),
        activate(reference, activation).astype(np.float64),
    )
    diff = np.abs(c - r)
    rho, topk = [], []
    for q in np.unique(queries):
        rows = queries == q
        for label in range(c.shape[1]):
            rho.append(spearman(c[rows, label], r[rows, label]))
            topk.append(topk_agreement(c[rows, label], r[rows, label], TOP_K, bar.max_abs_diff))
    return ScoreFidelity(
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        max_logit_diff=float(np.abs(candidate.astype(np.float64) - reference).max()),
        min_spearman=float(min(rho)),
        min_topk=float(min(topk)),
        top_k=TOP_K,
        n_pairs=len(c),
        n_queries=len(np.unique(queries)),
        max_tokens=max_tokens,
        bar_max_abs_diff=bar.max_abs_diff,
        bar_min_spearman=bar.min_spearman,
        bar_min_topk=bar.min_topk,
    )


def score_rows(candidate: np.ndarray, reference: np.ndarray, activation: Activation) -> np.ndarray:
    """Per pair, 1 − the largest |difference| of its activated scores: a number the int8 searches
    can hold to a floor as they hold cosines (``bar_as_cosines``)."""
    c, r = activate(candidate, activation), activate(reference, activation)
    return 1.0 - np.abs(c.astype(np.float64) - r).max(axis=1)  # type: ignore[no-any-return]


def batch_max_diff(alone: np.ndarray, batched: np.ndarray, activation: Activation) -> float:
    """The largest |difference| of activated scores between pairs run alone and the same pairs in
    a batch."""
    return float(np.abs(activate(alone, activation) - activate(batched, activation)).max())
