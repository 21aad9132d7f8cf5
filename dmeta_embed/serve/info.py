"""``GET /info``: the server's settings and each hosted model's facts and load plan."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..runtime.choice import batch_invariance_problem
from .models import Served

if TYPE_CHECKING:
    from .app import Service


def _model_facts(served: Served[Any]) -> dict[str, Any]:
    """What /info says of any hosted model: variant, provider, limits, workers, its load plan."""
    m, pool = served.model, served.batcher.pool
    plan = {k: v for k, v in m.plan.to_dict().items() if k not in ("folder", "cache_dir")}  # no local paths
    return {
        "variant": m.plan.variant.value,
        "provider": m.plan.provider.value,
        # whether an answer is independent of the requests batched with it
        "batch_invariant": not batch_invariance_problem(m.manifest, m.plan.variant),
        "max_length": m.max_length,
        "ready": served.batcher.ready,
        "worker_count": pool.split.workers,
        "plan": plan,
    }


def info_body(svc: Service) -> dict[str, Any]:
    """The server's settings; the embedder's facts at the top level (as before a server could
    host two models), the reranker's under ``reranker``; each model's load plan."""
    c = svc.cfg
    body: dict[str, Any] = {}
    if svc.models.embedding is not None:
        e = svc.models.embedding.model
        body.update(
            model=svc.models.embedding.name,
            **_model_facts(svc.models.embedding),
            dim=e.dim,
            dimensions=sorted({e.dim, *e.manifest.truncate_dims}, reverse=True),
            prompts=sorted(e.prompts),
            default_prompt_name=e.default_prompt_name,
            pooling=e.manifest.pooling.value,
            normalize=e.manifest.normalize,
        )
    if svc.models.rerank is not None:
        r = svc.models.rerank.model
        body["reranker"] = {
            "model": svc.models.rerank.name,
            **_model_facts(svc.models.rerank),
            "num_labels": r.num_labels,
            "activation": r.activation.value,
        }
    first = svc.models.all()[0].batcher
    body.update(
        version=__version__,
        ready=svc.is_ready,
        batching={
            "max_wait_ms": c.max_wait_ms,
            "batch_size": c.batch_size,
            "max_batch_tokens": first.max_batch_tokens,
            "spin": c.spin,
        },
        workers={
            "asked": "auto" if c.workers is None else c.workers,
            "count": first.pool.split.workers,
            "threads": first.pool.split.threads,
        },
        limits={
            "max_inputs": c.max_inputs,
            "max_documents": c.max_documents,
            "max_chars": c.max_chars,
            "max_queue": c.max_queue,
            "max_body_bytes": c.max_body_bytes,
            "request_timeout_s": c.request_timeout_s,
        },
        auth=svc.cfg.api_key is not None,
    )
    return body
