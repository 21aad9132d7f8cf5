"""Prometheus metrics, one registry per app (so two apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_POW2 = tuple(float(2**i) for i in range(15))  # 1 … 16384


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
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.0075,
                0.01,
                0.025,
                0.05,
                0.075,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
            ),
        )
        self.in_progress = Gauge("dmeta_embed_requests_in_progress", "Requests being handled now", registry=r)
        self.batch_size = Histogram(
            "dmeta_embed_batch_size",
            "Inputs per inference step (merged requests)",
            registry=r,
            buckets=_POW2[:11],
        )
        self.batch_requests = Histogram(
            "dmeta_embed_batch_requests",
            "Requests merged into one inference step",
            registry=r,
            buckets=_POW2[:11],
        )
        self.batch_tokens = Histogram(
            "dmeta_embed_batch_tokens", "Tokens per inference step (unpadded)", registry=r, buckets=_POW2
        )
        self.queue_depth = Gauge(
            "dmeta_embed_queue_depth", "Inputs waiting for the inference worker", registry=r
        )
        self.tokens = Counter("dmeta_embed_tokens_embedded", "Tokens embedded (after truncation)", registry=r)
        self.inputs = Counter("dmeta_embed_inputs_embedded", "Texts embedded", registry=r)
        self.abandoned = Counter(
            "dmeta_embed_requests_abandoned",
            "Requests whose client went away before their vectors were ready (their queued work is dropped)",
            registry=r,
        )
        self.worker_busy = Gauge(
            "dmeta_embed_worker_busy",
            "1 while the inference worker runs a batch (--workers: one series per worker)",
            ["worker"],
            registry=r,
        )
        self.ready = Gauge("dmeta_embed_ready", "1 once the model is loaded and warmed up", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
