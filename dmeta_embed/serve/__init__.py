"""The embeddings server: ``dmeta-embed serve`` (needs ``pip install 'dmeta-embed[server]'``).

Router (``app``) → dynamic batcher (``batcher``) → the runtime's ``Embedder``; like the runtime,
nothing here imports torch.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .._optional import require_feature
from .config import ServerConfig

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..runtime import Embedder

__all__ = ["ServerConfig", "create_app", "load_embedder", "serve"]


def create_app(
    embedder: Embedder,
    config: ServerConfig | None = None,
    *,
    warmup: Callable[[Embedder], None] | None = None,
) -> Starlette:
    """The ASGI app serving ``embedder`` (run it with any ASGI server; :func:`serve` uses uvicorn).

    ``warmup`` runs on the inference thread before the first job (None: a few shapes through the model)."""
    require_feature("server")
    from .app import create_app as _create

    return _create(embedder, config, warmup=warmup)


def load_embedder(
    model_dir: str | Path,
    config: ServerConfig | None = None,
    *,
    variant: str = "auto",
    provider: str = "auto",
    threads: int | None = None,
) -> Embedder:
    """The model as :func:`serve` loads it: the ``server`` profile of the load plan (``auto`` ranks
    by one-text latency and loads only a batch-invariant variant, OpenVINO in latency mode) with
    the server's batching settings."""
    from ..runtime import Embedder

    cfg = config or ServerConfig()
    return Embedder.load(
        model_dir,
        variant=variant,
        provider=provider,
        threads=threads,
        max_batch_tokens=cfg.max_batch_tokens,
        batch_size=cfg.batch_size,
        spin=cfg.spin,  # see ServerConfig.spin
        profile="server",
    )


def serve(
    model_dir: str | Path,
    config: ServerConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    variant: str = "auto",
    provider: str = "auto",
    threads: int | None = None,
    log_level: str = "info",
) -> None:
    """Load the model (errors surface here, before any port is bound), then serve until SIGTERM/SIGINT.

    SIGTERM: stop accepting connections, finish the requests in flight and the queue, return.
    """
    require_feature("server")
    import uvicorn

    cfg = config or ServerConfig()
    embedder = load_embedder(model_dir, cfg, variant=variant, provider=provider, threads=threads)
    app = create_app(embedder, cfg)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            lifespan="on",
            server_header=False,
            timeout_graceful_shutdown=int(cfg.request_timeout_s) + 5,
        )
    )
    # uvicorn's own logger: configured by uvicorn.Config, so this line appears beside its start-up lines
    logging.getLogger("uvicorn.error").info(
        "serving %r (%s, %s) on http://%s:%d",
        app.state.service.name,
        embedder.variant.value,
        embedder.provider.value,
        host,
        port,
    )
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again so the process dies
    # "by signal" (status 143); a handler installed here receives that second delivery, so a
    # graceful stop exits 0 as service managers expect
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
