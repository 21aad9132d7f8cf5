"""Prometheus metrics, one registry per app (so two apps in one process do not collide): the
app's request series, and one set of batcher series per model it hosts (:class:`ModelMetrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_POW2 = tuple(float(2**i) for i in range(15))  # 1 … 16384
_LATENCY = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ModelMetrics:
    """One hosted model's batcher, workers and readiness. The embedder's series keep the names
    they had before a server could host two models (``dmeta_embed_batch_size``...); the
    reranker's are the same series under ``dmeta_embed_rerank_``, so dashboards tell them apart
    without a label that would rename every existing series."""

    def __init__(self, r: CollectorRegistry, prefix: str, done: str, items: str) -> None:
        self.batch_size = Histogram(
            f"{prefix}_batch_size",
            "Inputs per inference step (merged requests)",
            registry=r,
            buckets=_POW2[:11],
        )
        self.batch_requests = Histogram(
            f"{prefix}_batch_requests",
            "Requests merged into one inference step",
            registry=r,
            buckets=_POW2[:11],
        )
        self.batch_tokens = Histogram(
            f"{prefix}_batch_tokens", "Tokens per inference step (unpadded)", registry=r, buckets=_POW2
        )
        self.queue_depth = Gauge(
            f"{prefix}_queue_depth", "Inputs waiting for the inference worker", registry=r
        )
        self.tokens = Counter(f"{prefix}_tokens_{done}", f"Tokens {done} (after truncation)", registry=r)
        self.inputs = Counter(f"{prefix}_{items}_{done}", f"{items.capitalize()} {done}", registry=r)
        self.abandoned = Counter(
            f"{prefix}_requests_abandoned",
            "Requests whose client went away before their answer was ready (their queued work is dropped)",
            registry=r,
        )
        self.worker_busy = Gauge(
            f"{prefix}_worker_busy",
            "1 while the inference worker runs a batch (--workers: one series per worker)",
            ["worker"],
            registry=r,
        )
        self.ready = Gauge(f"{prefix}_ready", "1 once the model is loaded and warmed up", registry=r)


class Metrics:
    """Every series the server exports, under the ``dmeta_embed_`` prefix."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "dmeta_embed_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "dmeta_embed_request_duration_seconds",
            "Request latency, arrival to response",
            ["endpoint"],
            registry=r,
            buckets=_LATENCY,
        )
        self.in_progress = Gauge("dmeta_embed_requests_in_progress", "Requests being handled now", registry=r)

    def embedder(self) -> ModelMetrics:
        """The embedder's series (made once per app: a registry refuses a name twice)."""
        return ModelMetrics(self.registry, "dmeta_embed", "embedded", "inputs")

    def reranker(self) -> ModelMetrics:
        """The reranker's series: pairs (query, document) scored."""
        return ModelMetrics(self.registry, "dmeta_embed_rerank", "scored", "pairs")

    def render(self) -> bytes:
        return generate_latest(self.registry)
