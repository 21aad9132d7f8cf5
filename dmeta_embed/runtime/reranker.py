"""The public reranking API: ``Reranker.load(folder).rank(query, documents)``, a drop-in for
sentence-transformers' ``CrossEncoder.predict`` and ``rank`` on an exported cross-encoder folder.

It runs on the same machinery as ``Embedder``: the same load (``runtime.loading``), its engines and
the length-sorted, token-budget batches of ``runtime.pipeline``; only the tokenizer (pairs, cut
as transformers cuts them) and what follows the graph (an activation instead of pooling options)
differ. Light dependencies only."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, ModelLoadError, TooLongError
from ..manifest import Manifest, Precision, Provider
from ..rerank_records import Activation, RerankSpec, Task
from .loading import LoadOptions, load_plan, start_logged
from .plan import LoadPlan
from .runner import Runner
from .scores import ActivationFn, activate, softmax
from .tokenize import PairTokenizer, Tokenized, check_pairs

if TYPE_CHECKING:
    from typing_extensions import Unpack  # Python 3.10 has no typing.Unpack; only mypy reads it


class RerankPipeline:
    """A started rerank plan's pair → logits machinery, in the pieces a server runs apart:
    :meth:`prepare` (tokenise, on the event loop) and :meth:`run` (on the inference thread,
    batched with other requests, on this pipeline's runner or a worker's). The batching, the fp32
    guard and the per-worker runners are ``runtime.pipeline.Pipeline``'s, given a pair tokenizer."""

    def __init__(self, plan: LoadPlan, runner: Runner) -> None:
        from .pipeline import Pipeline

        spec = rerank_spec(plan.manifest, plan.folder)
        self.tokenizer = PairTokenizer(
            plan.tokenizer_file,
            plan.manifest.max_length,
            spec.truncation,
            token_types="token_type_ids" in plan.manifest.inputs,
        )
        self._core = Pipeline(plan, runner, self.tokenizer)
        self.plan, self.manifest, self.runner = plan, plan.manifest, runner

    @property
    def truncated_count(self) -> int:
        """Pairs cut at max_length so far (the first cut is logged, once)."""
        return self._core.truncated_count

    def prepare(
        self, pairs: list[tuple[str, str]], truncate: bool = True, *, field: str = "texts", offset: int = 0
    ) -> Tokenized:
        """``pairs`` tokenised as transformers tokenises pairs, cut at max_length (``truncate``) or
        refused with a TooLongError naming the first pair too long (``field``: the caller's name
        for the list, ``offset`` added to the index). An empty list, or an item that is not a pair
        of str, is an InputError naming it."""
        tok = self.tokenizer.encode_pairs(check_pairs(pairs, field))
        if tok.truncated:
            first = offset + tok.truncated[0]
            if not truncate:
                limit = self.tokenizer.max_length
                raise TooLongError(
                    f"{field}[{first}] is longer than max_length={limit} tokens with its query (truncate=False)",
                    index=first,
                    field=field,
                    reason=f"is longer than max_length={limit} tokens with its query",
                )
            self._core.count_truncated(len(tok.truncated), first)
        return tok

    def run(
        self, tok: Tokenized, runner: Runner | None = None, *, batch_size: int | None = None
    ) -> np.ndarray:
        """Raw logits ``(n, num_labels)`` float32 of prepared pairs, rows in input order, in the
        plan's length-sorted batches (``batch_size``: at most that many pairs per batch).
        ``runner``: another engine started from the same plan (a server worker's)."""
        return self._core.run(tok, batch_size=batch_size, runner=runner)

    def fp32_runner(self) -> Runner:
        """The fp32 graph the guard routes degenerate pairs to (``Pipeline.fp32_runner``)."""
        return self._core.fp32_runner()


def rerank_spec(manifest: Manifest, folder: Path) -> RerankSpec:
    """The folder's :class:`RerankSpec`, or a ModelLoadError naming its task."""
    if manifest.task != Task.RERANK or manifest.rerank is None:
        raise ModelLoadError(
            f"{folder} is an {manifest.task.value} folder (an embedding model), not a cross-encoder: "
            "load it with Embedder.load, not Reranker.load"
        )
    return manifest.rerank


class Reranker:
    """Scores of (query, document) pairs from an exported cross-encoder folder. Made from a
    started :class:`~dmeta_embed.runtime.plan.LoadPlan` (:meth:`load` makes and starts one)."""

    def __init__(self, plan: LoadPlan, runner: Runner | None = None, *, truncate: bool = True) -> None:
        spec = rerank_spec(plan.manifest, plan.folder)
        plan, runner = start_logged(plan, runner)
        self.plan = plan
        self.path: Path = plan.folder
        self.manifest: Manifest = plan.manifest
        self.spec = spec
        #: the pair → logits pieces: what the server runs apart
        self.pipeline = RerankPipeline(plan, runner)
        #: cut pairs over max_length (True, as CrossEncoder does) or refuse them
        self.truncate = truncate

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        variant: str = "auto",
        provider: str = "auto",
        truncate: bool = True,
        **options: Unpack[LoadOptions],
    ) -> Reranker:
        """Load ``path`` (an exported rerank folder, or a cross-encoder's hub id or folder, exported
        once into the export cache) on the load plan ``Embedder.load`` makes: the same arguments,
        the same ``auto`` (among the variants that met their score bars)."""
        return cls(load_plan(path, variant, provider, **options), truncate=truncate)

    @property
    def variant(self) -> Precision:
        return self.plan.variant

    @property
    def provider(self) -> Provider:
        return self.plan.provider

    @property
    def max_length(self) -> int:
        return self.manifest.max_length

    @property
    def num_labels(self) -> int:
        return self.spec.num_labels

    @property
    def activation(self) -> Activation:
        return self.spec.activation

    def logits(
        self, pairs: list[tuple[str, str]], *, batch_size: int | None = None, field: str = "texts"
    ) -> np.ndarray:
        """Raw logits ``(n, num_labels)`` of ``pairs``, in input order."""
        pipe = self.pipeline
        return pipe.run(pipe.prepare(pairs, self.truncate, field=field), batch_size=batch_size)

    def activate(self, logits: np.ndarray, activation_fn: ActivationFn | None = None) -> np.ndarray:
        """Scores from logits: ``activation_fn`` (``sigmoid``/``softmax``/``identity`` or a function
        of the ``(n, num_labels)`` array; None: the manifest's). One label: shape ``(n,)``."""
        scores = activate(logits, self.activation if activation_fn is None else activation_fn)
        return scores[:, 0] if self.num_labels == 1 and scores.ndim == 2 else scores

    def predict(
        self,
        pairs: list[tuple[str, str]] | tuple[str, str],
        *,
        batch_size: int = 32,
        activation_fn: ActivationFn | None = None,
        apply_softmax: bool = False,
        convert_to_numpy: bool = True,
        show_progress_bar: bool = False,
    ) -> Any:
        """``CrossEncoder.predict``: one score per pair (``(n,)`` for one label, ``(n, num_labels)``
        otherwise), float32, in input order; one pair given alone gives its score alone.
        ``apply_softmax``: a softmax over the labels after ``activation_fn`` (several labels).
        ``show_progress_bar`` is accepted and ignored."""
        single = (
            isinstance(pairs, (tuple, list)) and len(pairs) == 2 and all(isinstance(t, str) for t in pairs)
        )
        items: Any = [tuple(pairs)] if single else pairs
        scores = self.activate(self.logits(items, batch_size=batch_size), activation_fn)
        if apply_softmax and scores.ndim > 1:
            scores = softmax(scores)
        if single:
            return scores[0]
        return scores if convert_to_numpy else list(scores)

    def rank(
        self,
        query: str,
        documents: list[str],
        *,
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int = 32,
        activation_fn: ActivationFn | None = None,
    ) -> list[dict[str, Any]]:
        """``CrossEncoder.rank``: ``[{"corpus_id": i, "score": s(, "text": doc)}]``, best first
        (ties in input order), the first ``top_k``. Needs a one-label model."""
        if not isinstance(query, str):
            raise InputError(
                f"query is {type(query).__name__}, expected str", field="query", reason="is not a str"
            )
        if self.num_labels != 1:
            raise InputError(
                f"rank needs a one-label cross-encoder; this one has {self.num_labels} labels (use predict)",
                field="documents",
                reason=f"cannot be ranked by a {self.num_labels}-label model",
            )
        if isinstance(documents, (str, bytes)) or not isinstance(documents, list):
            raise InputError(
                "documents is not a list of str", field="documents", reason="is not a list of str"
            )
        if not documents:
            raise InputError("documents is empty: nothing to rank", field="documents", reason="is empty")
        for i, d in enumerate(documents):
            if not isinstance(d, str):
                what = f"is {type(d).__name__}, expected str"
                raise InputError(f"documents[{i}] {what}", index=i, field="documents", reason=what)
        logits = self.logits([(query, d) for d in documents], batch_size=batch_size, field="documents")
        scores = self.activate(logits, activation_fn)
        order = sorted(range(len(documents)), key=lambda i: -float(scores[i]))
        out = []
        for i in order[:top_k]:
            row: dict[str, Any] = {"corpus_id": i, "score": float(scores[i])}
            if return_documents:
                row["text"] = documents[i]
            out.append(row)
        return out

    def __repr__(self) -> str:
        return (
            f"Reranker({str(self.path)!r}, variant={self.variant.value!r}, provider={self.provider.value!r}, "
            f"num_labels={self.num_labels}, activation={self.activation.value!r}, max_length={self.max_length})"
        )
