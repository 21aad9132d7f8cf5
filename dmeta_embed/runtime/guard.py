"""Which texts a reduced-precision variant must not compute: those made of one token over and over.

A text such as ``"word " * 176`` drives a transformer far outside what its weights were trained
on: on real all-mpnet-base-v2 the float vectors of such a text move with the smallest rounding
change (fp16 gave min cos 0.995 and bf16 0.978 against torch fp32, int8 0.54), while every other
degenerate family (punctuation, symbols, emoji, digits, code, URLs, mixed scripts...) stayed
within the bars (docs/export.md, "Degenerate input"). No calibration fixes an input whose fp32
answer itself is that sensitive, so the runtime routes such texts to the fp32 graph, which
reproduces the reference: a rule on the token ids alone, the same for a text alone or inside any
batch (batch-invariant by construction). numpy only.
"""

from __future__ import annotations

import numpy as np

from .tokenize import Tokenized

#: a text this long or longer (tokens between the special ones) can be dominated
MIN_TOKENS = 8
#: ... when one token makes up at least this share of it
DOMINANT_SHARE = 0.5


def dominated(ids: list[int], unk_id: int | None = None) -> bool:
    """Whether one token makes up at least :data:`DOMINANT_SHARE` of the text (special tokens at
    both ends left out), at :data:`MIN_TOKENS` tokens or more. The unknown token never counts as
    the dominant one: a script outside the vocabulary (Chinese through an English model) maps
    whole texts to it, and those stayed within every bar (docs/export.md, "Degenerate input")."""
    body = np.asarray(ids[1:-1])
    if len(body) < MIN_TOKENS:
        return False
    if unk_id is not None:
        body = body[body != unk_id]
        if not len(body):
            return False
    _, counts = np.unique(body, return_counts=True)
    return bool(counts.max() >= DOMINANT_SHARE * (len(ids) - 2))


def routed(tok: Tokenized, unk_id: int | None = None) -> np.ndarray:
    """Row indices of ``tok`` that go to the fp32 graph."""
    return np.array([i for i, ids in enumerate(tok.ids) if dominated(ids, unk_id)], dtype=np.int64)


def take(tok: Tokenized, rows: np.ndarray) -> Tokenized:
    """The rows ``rows`` of ``tok``, in that order."""
    return tok.take(rows)
