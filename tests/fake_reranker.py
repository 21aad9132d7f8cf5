"""A deterministic stand-in for the runtime's ``Reranker`` (the rerank contract's surface), for
serve and integration tests that check plumbing (order, top_n, limits, errors), not a model:
a pair's logit is a fixed function of its token ids, so it is the same alone or in any batch."""

from __future__ import annotations

from enum import Enum
from typing import Any

import numpy as np

from dmeta_embed.errors import InputError, TooLongError
from dmeta_embed.runtime import Embedder
from dmeta_embed.runtime.tokenize import Tokenized


class Activation(str, Enum):
    SIGMOID = "sigmoid"
    IDENTITY = "identity"


def fake_logit(ids: list[int]) -> float:
    """A pair's raw score: spread over about [-5, 5], different for nearly every pair."""
    return float((sum(i * (k + 1) for k, i in enumerate(ids)) % 1009) / 100.0 - 5.0)


class FakePipeline:
    def __init__(self, embedder: Embedder) -> None:
        self.runner = embedder.pipeline.runner
        self._tokenizer = embedder.pipeline.tokenizer

    def prepare(self, pairs: list[tuple[str, str]], truncate: bool = True) -> Tokenized:
        if not pairs:
            raise InputError("no pairs", field="texts", reason="is empty")
        tok = self._tokenizer.encode([f"{q} {d}" for q, d in pairs])
        if tok.truncated and not truncate:
            i = tok.truncated[0]
            raise TooLongError(f"texts[{i}] is too long", index=i)
        return tok

    def run(self, tok: Tokenized, runner: Any = None) -> np.ndarray:
        return np.array([[fake_logit(ids)] for ids in tok.ids], dtype=np.float32)


class FakeReranker:
    """Borrows a loaded embedder's plan (so the server's workers start) and tokenizer."""

    num_labels = 1
    activation = Activation.SIGMOID

    def __init__(self, embedder: Embedder) -> None:
        self.plan = embedder.plan
        self.manifest = embedder.manifest
        self.max_length = embedder.max_length
        self.pipeline = FakePipeline(embedder)

    def activate(self, logits: np.ndarray, activation_fn: Any = None) -> np.ndarray:
        x = np.asarray(logits, dtype=np.float32)[:, 0]
        if (activation_fn or self.activation.value) == "identity":
            return x
        return 1 / (1 + np.exp(-x))

    def predict(self, pairs: list[tuple[str, str]], **kw: Any) -> np.ndarray:
        return self.activate(self.pipeline.run(self.pipeline.prepare(pairs)))

    def rank(self, query: str, documents: list[str], *, top_k: int | None = None, **kw: Any) -> list[dict]:
        scores = self.predict([(query, d) for d in documents])
        ranked = sorted(
            ({"corpus_id": i, "score": float(s)} for i, s in enumerate(scores)),
            key=lambda r: r["score"],
            reverse=True,
        )
        return ranked[:top_k]
