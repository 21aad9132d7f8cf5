"""The models one server hosts: an embedder, a reranker, or one of each, each with its own
batcher, workers and metrics. What the batcher needs of either is an :class:`~.batcher.Engine`;
the routes reach a model through :class:`Hosted`, which refuses a route whose model is absent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..rerank_records import Task
from ..runtime import Embedder
from ..runtime.runner import Runner
from .batcher import Batcher, Engine
from .config import ServerConfig
from .errors import Kind, RequestError
from .metrics import Metrics, ModelMetrics

if TYPE_CHECKING:
    from ..runtime.reranker import Reranker

M = TypeVar("M")


#: a few (query, document) pairs of each shape a reranker is warmed up with
_WARM_PAIRS = (("warm up", "warm up the model"), ("warm up the model", "warm up the model " * 3))


@dataclass(frozen=True)
class Loaded:
    """What ``serve`` loaded: an embedder, a reranker, or both (at least one)."""

    embedder: Embedder | None = None
    reranker: Reranker | None = None


# -- warm-up -----------------------------------------------------------------------------------------


def warm_up_shapes(embedder: Embedder) -> list[list[str]]:
    """A few shapes to run once: onnxruntime allocates and picks kernels on first use, which
    would otherwise land on the first clients' latency."""
    long = "warm up the model " * 120
    while embedder.count_tokens([long])[0] >= embedder.max_length:
        long = long[: len(long) // 2]  # stay under max_length: truncation would log a warning
    return [[text] * n for n, text in ((1, "warm up"), (32, "warm up the model " * 3), (4, long))]


def warm_up(embedder: Embedder) -> None:
    """The default warm-up: :func:`warm_up_shapes` through ``encode``, then the int8 ranges."""
    for texts in warm_up_shapes(embedder):
        embedder.encode(texts)
    # int8/uint8 requests use fixed calibration ranges: computed here, on the inference thread,
    # rather than by the first such request on the event loop
    embedder.calibration_ranges()
    if embedder.plan.guard:  # the fp32 graph the guard routes to: started now, not by a request
        embedder.pipeline.fp32_runner()


def warm_up_runner(embedder: Embedder, runner: Runner) -> None:
    """:func:`warm_up_shapes` through another worker's engine."""
    for texts in warm_up_shapes(embedder):
        embedder.pipeline.run(embedder.pipeline.prepare(texts, count=False).tokens, runner=runner)


def warm_up_reranker(reranker: Reranker, runner: Runner | None = None) -> None:
    """One pair, then 32, through ``runner`` (default: the reranker's own engine, and then the
    fp32 graph its guard routes to, started now rather than by a request)."""
    for n, pair in ((1, _WARM_PAIRS[0]), (32, _WARM_PAIRS[1])):
        reranker.pipeline.run(reranker.pipeline.prepare([pair] * n), runner=runner)
    if runner is None and reranker.plan.guard:
        reranker.pipeline.fp32_runner()


# -- engines ----------------------------------------------------------------------------------------


def embed_engine(embedder: Embedder) -> Engine:
    def run(tok: Any, runner: Runner, batch_size: int, max_batch_tokens: int) -> Any:
        return embedder.pipeline.run(
            tok, batch_size=batch_size, max_batch_tokens=max_batch_tokens, runner=runner
        )

    return Engine(embedder.plan, embedder.pipeline.runner, run, lambda r: warm_up_runner(embedder, r))


def rerank_engine(reranker: Reranker) -> Engine:
    # the token budget is the plan's: serve.load_reranker made that plan with the server's
    # max_batch_tokens, so it is the batcher's own
    def run(tok: Any, runner: Runner, batch_size: int, max_batch_tokens: int) -> Any:
        return reranker.pipeline.run(tok, runner, batch_size=batch_size)

    return Engine(reranker.plan, reranker.pipeline.runner, run, lambda r: warm_up_reranker(reranker, r))


def served_name(model: Any, chosen: str | None) -> str:
    """``chosen`` (``--model-name``), else the export's source hub id, else the folder name
    (never a local path)."""
    if chosen:
        return chosen
    source = str(model.manifest.source.get("model") or "")
    if source and not Path(source).is_absolute() and not source.startswith(".") and source.count("/") <= 1:
        return source
    return Path(model.plan.folder).resolve().name


def token_limit(served: Served[Any]) -> int:
    """The tokens one input may have: an embedder's may have been lowered (``max_seq_length``)."""
    m = served.model
    return int(m.max_seq_length if served.task is Task.EMBED else m.max_length)


@dataclass(eq=False)
class Served(Generic[M]):
    """One hosted model: the runtime object, the name it is reported by, its batcher and series."""

    task: Task
    model: M
    name: str
    batcher: Batcher
    metrics: ModelMetrics


def host(task: Task, model: M, cfg: ServerConfig, metrics: Metrics, name: str | None) -> Served[M]:
    """``model`` with a batcher and workers of its own (started with the app's lifespan)."""
    if task is Task.EMBED:
        series, engine = metrics.embedder(), embed_engine(model)  # type: ignore[arg-type]
    else:
        series, engine = metrics.reranker(), rerank_engine(model)  # type: ignore[arg-type]
    return Served(task, model, served_name(model, name), Batcher(engine, cfg, series), series)


class Hosted:
    """The app's models by task; asking for one the server does not host is a refusal
    (``Kind.NO_MODEL``: 404 on OpenAI's and Cohere's routes, 424 on TEI's, as TEI answers)."""

    def __init__(self, embedding: Served[Embedder] | None, rerank: Served[Reranker] | None) -> None:
        if embedding is None and rerank is None:
            raise ValueError("a server hosts an embedder, a reranker or both; got neither")
        self.embedding = embedding
        self.rerank = rerank

    def all(self) -> list[Served[Any]]:
        return [s for s in (self.embedding, self.rerank) if s is not None]

    def embedder(self) -> Served[Embedder]:
        if self.embedding is None:
            raise RequestError(
                "no embedding model is loaded: this server hosts only the reranker "
                f"{self.rerank.name!r} (POST /rerank, /v1/rerank)",  # type: ignore[union-attr]
                Kind.NO_MODEL,
                field="model",
            )
        return self.embedding

    def reranker(self) -> Served[Reranker]:
        if self.rerank is None:
            raise RequestError(
                "no reranking model is loaded: this server hosts only the embedder "
                f"{self.embedding.name!r}; start it with --rerank-model to serve /rerank",  # type: ignore[union-attr]
                Kind.NO_MODEL,
                field="model",
            )
        return self.rerank
