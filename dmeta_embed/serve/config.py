"""Server settings: one frozen dataclass, filled by the CLI or by a caller of ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerConfig:
    """How the server batches and what it refuses. Defaults suit a CPU serving short queries."""

    #: a request waits at most this long for others to share its batch (only while requests are
    #: arriving concurrently: a lone client never waits)
    max_wait_ms: float = 2.0
    #: most inputs in one inference batch; 1 turns dynamic batching off
    batch_size: int = 32
    #: most padded tokens in one inference batch (None: the runtime's default for the provider)
    max_batch_tokens: int | None = None
    #: most inputs waiting for the worker; beyond it requests get 503 + Retry-After
    max_queue: int = 4096
    #: most inputs in one request (OpenAI's own limit is 2048)
    max_inputs: int = 2048
    #: most documents in one rerank request (TEI's ``max_client_batch_size``; Cohere takes up to
    #: 1,000 documents per request, so clients written for it fit)
    max_documents: int = 1000
    #: most characters in one input (a rerank query or document too); longer texts would be truncated to max_length tokens anyway,
    #: so this bounds work and memory, not what the model sees
    max_chars: int = 16384
    #: bodies above this are refused before they are parsed
    max_body_bytes: int = 32 * 1024 * 1024
    #: a request that waited this long (queue + inference) gets 503 and its work is dropped
    request_timeout_s: float = 30.0
    #: bearer token every request except /health and /ready must carry; None: no auth
    api_key: str | None = field(default=None, repr=False)
    #: the name reported as ``model``; None: the export's source model (or folder name)
    model_name: str | None = None
    #: the same for the reranker, when the server hosts one beside an embedder (``--rerank-model``);
    #: a server of one reranker alone reports ``model_name``
    rerank_model_name: str | None = None
    #: onnxruntime worker threads busy-wait between ops. On cores the server has to itself this is
    #: faster; on cores shared with other busy processes it steals their CPU and single queries get
    #: slower, so turn it off there (--no-spin). Figures: docs/performance.md
    spin: bool = True
    #: inferences run at once, each on its own engine (onnxruntime session, OpenVINO stream) with
    #: an equal share of the threads, fed by the one batcher; None: ``auto``, the rule in
    #: ``runtime.workers.workers_for`` (one worker on up to 4 cores)
    workers: int | None = None

    def __post_init__(self) -> None:
        positive = {
            "batch_size": self.batch_size,
            "max_queue": self.max_queue,
            "max_inputs": self.max_inputs,
            "max_documents": self.max_documents,
            "max_chars": self.max_chars,
            "max_body_bytes": self.max_body_bytes,
            "request_timeout_s": self.request_timeout_s,
        }
        bad = [f"{k}={v}" for k, v in positive.items() if v <= 0]
        if self.max_wait_ms < 0:
            bad.append(f"max_wait_ms={self.max_wait_ms}")
        if self.workers is not None and self.workers <= 0:
            bad.append(f"workers={self.workers}")
        if self.max_batch_tokens is not None and self.max_batch_tokens <= 0:
            bad.append(f"max_batch_tokens={self.max_batch_tokens}")
        if bad:
            raise ValueError(f"server settings must be positive: {', '.join(bad)}")
        if self.api_key == "":
            raise ValueError("api_key is empty; pass None to turn authentication off")
