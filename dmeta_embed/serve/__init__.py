"""The embeddings server: ``dmeta-embed serve`` (needs ``pip install 'dmeta-embed[server]'``).

Router (``app``) → dynamic batcher (``batcher``) → the runtime's ``Embedder``; like the runtime,
nothing here imports torch.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._optional import require_feature
from ..cache import TYPICAL, Kind, ensure, locate, require_export
from .config import ServerConfig

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..runtime import Embedder
    from ..runtime.plan import LoadPlan

__all__ = ["ServerConfig", "create_app", "embedder_for", "load_embedder", "serve", "server_plan"]


def create_app(
    embedder: Embedder,
    config: ServerConfig | None = None,
    *,
    warmup: Callable[[Embedder], None] | None = None,
    extra_info: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> Starlette:
    """The ASGI app serving ``embedder`` (run it with any ASGI server; :func:`serve` uses uvicorn).

    ``warmup`` runs on the inference thread before the first job (None: a few shapes through the
    model); ``extra_info`` adds fields to ``/info`` (``serve.ray``: the deployment's replicas)."""
    require_feature("server")
    from .app import create_app as _create

    return _create(embedder, config, warmup=warmup, extra_info=extra_info)


def load_embedder(
    model: str | Path,
    config: ServerConfig | None = None,
    *,
    variant: str = "auto",
    provider: str = "auto",
    threads: int | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
) -> Embedder:
    """The model as :func:`serve` loads it: the ``server`` profile of the load plan (``auto`` ranks
    by one-text latency and loads only a batch-invariant variant, OpenVINO in latency mode) with
    the server's batching settings; with several workers (``config.workers``), the first
    worker's engine (onnxruntime: on its share of the threads; OpenVINO: a request on the
    compiled model with a stream per worker). ``model``: what ``Embedder.load`` takes (an exported
    folder, a hub id at ``revision`` or a model folder, exported once into ``cache_dir``)."""
    from ..cache import resolve_model

    cfg = config or ServerConfig()
    return embedder_for(
        server_plan(resolve_model(model, revision, cache_dir), cfg, variant, provider, threads), cfg
    )


def server_plan(
    folder: Path,
    config: ServerConfig,
    variant: str = "auto",
    provider: str = "auto",
    threads: int | None = None,
) -> LoadPlan:
    """The ``server`` profile of the load plan for an exported ``folder``, with ``config``'s batching."""
    from ..runtime.plan import make_plan

    return make_plan(
        folder,
        variant,
        provider,
        "server",
        threads=threads,
        max_batch_tokens=config.max_batch_tokens,
        batch_size=config.batch_size,
        spin=config.spin,  # see ServerConfig.spin
    )


def embedder_for(plan: LoadPlan, config: ServerConfig) -> Embedder:
    """The server's first worker's engine for ``plan`` (see :func:`load_embedder`): a Ray Serve
    replica starts the plan its driver made (``LoadPlan.from_dict``) through here too."""
    from ..runtime import Embedder
    from ..runtime.engines import start_runner
    from ..runtime.workers import split_for

    cfg = config
    split = split_for(plan, cfg.workers)
    if split.workers > 1 and plan.engine == "openvino":
        # the first worker's request on the compiled model the workers share (no second copy)
        return Embedder(plan, start_runner(plan, streams=split.workers))
    if split.workers > 1 and plan.engine == "onnxruntime":
        # one session per worker: this one is the first worker's, on its share of the threads
        # (create_app's pool starts the others)
        plan = replace(plan, threads=split.threads)
    return Embedder(plan)


def serve(
    model: str | Path,
    config: ServerConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    variant: str = "auto",
    provider: str = "auto",
    threads: int | None = None,
    log_level: str = "info",
    revision: str | None = None,
    cache_dir: str | Path | None = None,
) -> None:
    """Load the model, then serve until SIGTERM/SIGINT. ``model``: an exported folder, or a hub id
    (at ``revision``) or model folder with an export in ``cache_dir`` (``dmeta_embed.cache``).

    An exported model loads before any port is bound (its errors surface here). One that needs
    exporting first is exported while the port already answers: ``/health`` 200, ``/ready`` 503
    until the model is loaded and warm; a failed export stops the server and is raised here.
    SIGTERM: stop accepting connections, finish the requests in flight and the queue, return.
    """
    require_feature("server")
    import uvicorn

    from .loading import LoadingApp

    cfg = config or ServerConfig()
    source = locate(model, revision, cache_dir)
    if source.kind is Kind.FOLDER and cfg.model_name is None:
        cfg = replace(cfg, model_name=source.name)  # not the cache entry's name

    def load(folder: Path) -> Embedder:
        return load_embedder(folder, cfg, variant=variant, provider=provider, threads=threads)

    app: Starlette | LoadingApp
    if source.needs_export:
        require_export(source, quick=True)  # a base install is told before any port is bound
        app = LoadingApp(
            lambda: load(ensure(source)),
            cfg,
            status="exporting",
            detail=f"exporting {source.name} into {source.folder} ({TYPICAL})",
        )
    else:
        app = create_app(load(source.folder), cfg)
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
    # uvicorn's own logger: configured by uvicorn.Config, so these lines appear beside its own
    say = logging.getLogger("uvicorn.error").info

    def serving(model_app: Starlette) -> None:
        svc = model_app.state.service
        url = f"http://{host}:{port}"
        say(
            "serving %r (%s, %s) on %s",
            svc.name,
            svc.embedder.variant.value,
            svc.embedder.provider.value,
            url,
        )

    if isinstance(app, LoadingApp):
        app.on_ready = serving

        def stop(e: BaseException) -> None:
            server.should_exit = True  # serve() raises the error once the server has stopped

        app.on_error = stop
        say("exporting %s, then serving it on http://%s:%d (/ready: 503 until then)", source.name, host, port)
    else:
        serving(app)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again so the process dies
    # "by signal" (status 143); a handler installed here receives that second delivery, so a
    # graceful stop exits 0 as service managers expect
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if isinstance(app, LoadingApp) and app.error is not None:
        raise app.error
