"""What a rerank (cross-encoder) folder's manifest records beside an embedding folder's: the
:class:`Task`, the :class:`RerankSpec` (activation, labels, how pairs are truncated) and each
variant's :class:`ScoreFidelity` (scores against PyTorch's, where embeddings record cosines).

Standard library only: shared by export (writes them) and runtime (reads them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Task(str, Enum):
    """What a folder's graph computes."""

    #: one vector per text (``sentence_embedding``); folders without a ``task`` key are embed
    EMBED = "embed"
    #: one row of logits per (query, document) pair (``logits``): a cross-encoder
    RERANK = "rerank"


class Activation(str, Enum):
    """What turns a cross-encoder's logits into scores (sentence-transformers' ``activation_fn``)."""

    SIGMOID = "sigmoid"
    SOFTMAX = "softmax"
    IDENTITY = "identity"


#: the graph output of a rerank folder: raw float32 logits, (n, num_labels)
LOGITS = "logits"
#: transformers' pair truncation strategy CrossEncoder tokenises with
LONGEST_FIRST = "longest_first"
#: pair truncation strategies the runtime's tokenizer can apply, by transformers' names
TRUNCATION_STRATEGIES = frozenset({"longest_first", "only_first", "only_second"})


@dataclass(frozen=True)
class RerankSpec:
    """How a rerank folder's logits become scores and how its pairs are tokenised."""

    activation: Activation
    num_labels: int
    #: label id → label name (transformers' ``id2label``)
    labels: dict[int, str] = field(default_factory=dict)
    #: how a pair over max_length is cut (transformers' pair strategy, by name)
    truncation: str = LONGEST_FIRST
    #: where the activation came from (a sentence-transformers config key, or the default)
    activation_from: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "activation": self.activation.value,
            "num_labels": self.num_labels,
            "labels": {str(k): v for k, v in self.labels.items()},
            "truncation": self.truncation,
            "activation_from": self.activation_from,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RerankSpec:
        truncation = str(d.get("truncation", LONGEST_FIRST))
        if truncation not in TRUNCATION_STRATEGIES:
            raise ValueError(
                f"rerank truncation {truncation!r} is not one of {sorted(TRUNCATION_STRATEGIES)}"
            )
        return cls(
            activation=Activation(d["activation"]),
            num_labels=int(d["num_labels"]),
            labels={int(k): str(v) for k, v in (d.get("labels") or {}).items()},
            truncation=truncation,
            activation_from=str(d.get("activation_from", "")),
        )


@dataclass(frozen=True)
class ScoreBar:
    """Fidelity a rerank variant must reach against the PyTorch reference, on the activated scores
    of the probe pairs: the largest absolute difference, the lowest Spearman correlation of one
    query's documents, and the lowest top-k agreement of one query (a document of the variant's
    top k counts when its reference score is within ``max_abs_diff`` of the reference's k-th)."""

    max_abs_diff: float
    min_spearman: float
    min_topk: float = 1.0


#: a pair's activated scores alone vs inside a batch: at or below this largest difference a
#: variant counts as batch-invariant (what ``serve`` needs: it batches concurrent requests)
SCORE_INVARIANCE_BAR = 1e-3


@dataclass(frozen=True)
class ScoreFidelity:
    """Measured agreement of a rerank variant with the PyTorch reference on the probe pairs (the
    rerank counterpart of ``manifest.Fidelity``; the plan reads ``passed`` and the batch facts)."""

    #: the largest |difference| of the activated scores (every label's)
    max_abs_diff: float
    #: the mean |difference| of the activated scores
    mean_abs_diff: float
    #: the largest |difference| of the raw logits
    max_logit_diff: float
    #: the lowest Spearman correlation, over the queries (and labels), of the documents' scores
    min_spearman: float
    #: the lowest share of a query's top k the variant agrees on (see :class:`ScoreBar`)
    min_topk: float
    top_k: int
    n_pairs: int
    n_queries: int
    max_tokens: int
    bar_max_abs_diff: float
    bar_min_spearman: float
    bar_min_topk: float
    #: the largest |difference| of a pair's activated scores alone vs inside the export's batches
    #: (None: not measured)
    batch_max_diff: float | None = None

    @property
    def passed(self) -> bool:
        return (
            self.max_abs_diff <= self.bar_max_abs_diff
            and self.min_spearman >= self.bar_min_spearman
            and self.min_topk >= self.bar_min_topk
        )

    @property
    def batch_measured(self) -> bool:
        return self.batch_max_diff is not None

    @property
    def batch_invariant(self) -> bool:
        """Whether a pair gets the same scores alone and in any batch (to
        :data:`SCORE_INVARIANCE_BAR`), as measured at export; False when it was not measured."""
        return self.batch_max_diff is not None and self.batch_max_diff <= SCORE_INVARIANCE_BAR

    def describe(self) -> str:
        """One line: each figure beside its bar."""
        return (
            f"max |Δscore| {self.max_abs_diff:.2e} (bar {self.bar_max_abs_diff:g}), "
            f"min Spearman {self.min_spearman:.4f} (bar {self.bar_min_spearman:g}), "
            f"top-{self.top_k} agreement {self.min_topk:.3f} (bar {self.bar_min_topk:g})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "score"} | asdict(self) | {"passed": self.passed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreFidelity:
        optional = {"batch_max_diff"}
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d or k not in optional})
