"""The embeddings and rerank server: ``dmeta-embed serve`` (needs ``pip install 'dmeta-embed[server]'``).

Router (``app``, ``rerank``) → one dynamic batcher per model (``batcher``) → the runtime's
``Embedder`` and ``Reranker``; like the runtime, nothing here imports torch.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .._optional import require_feature
from ..cache import TYPICAL, Kind, ensure, locate, must_export, require_export
from ..errors import ModelLoadError
from .config import ServerConfig

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..runtime import Embedder
    from ..runtime.plan import LoadPlan
    from ..runtime.reranker import Reranker
    from .models import Loaded

#: what the server loads: an Embedder or a Reranker (both take a plan and an optional runner)
_E = TypeVar("_E")

__all__ = [
    "ServerConfig",
    "create_app",
    "embedder_for",
    "load_embedder",
    "load_reranker",
    "serve",
    "server_plan",
]


def create_app(
    embedder: Embedder | None = None,
    config: ServerConfig | None = None,
    *,
    reranker: Reranker | None = None,
    warmup: Callable[[Any], None] | None = None,
    extra_info: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> Starlette:
    """The ASGI app serving ``embedder``, ``reranker`` or both (run it with any ASGI server;
    :func:`serve` uses uvicorn). Each model has its own batcher and workers.

    ``warmup(model)`` runs on each model's inference thread before its first job (None: a few
    shapes through the model); ``extra_info`` adds fields to ``/info`` (``serve.ray``: the
    deployment's replicas)."""
    require_feature("server")
    from .app import create_app as _create

    return _create(embedder, config, reranker=reranker, warmup=warmup, extra_info=extra_info)


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


def _first_worker(plan: LoadPlan, config: ServerConfig) -> tuple[LoadPlan, Any]:
    """The plan of the server's first worker and, where workers share one compiled model
    (OpenVINO), its runner (None: the model starts its own engine)."""
    from ..runtime.engines import start_runner
    from ..runtime.workers import split_for

    split = split_for(plan, config.workers)
    if split.workers > 1 and plan.engine == "openvino":
        # the first worker's request on the compiled model the workers share (no second copy)
        return plan, start_runner(plan, streams=split.workers)
    if split.workers > 1 and plan.engine == "onnxruntime":
        # one session per worker: this one is the first worker's, on its share of the threads
        # (create_app's pool starts the others)
        plan = replace(plan, threads=split.threads)
    return plan, None


def embedder_for(plan: LoadPlan, config: ServerConfig) -> Embedder:
    """The server's first worker's engine for ``plan`` (see :func:`load_embedder`): a Ray Serve
    replica starts the plan its driver made (``LoadPlan.from_dict``) through here too."""
    from ..runtime import Embedder

    return Embedder(*_first_worker(plan, config))


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
    from ..runtime import Embedder

    return _first_engine(Embedder, model, config, variant, provider, threads, revision, cache_dir)


def load_reranker(
    model: str | Path,
    config: ServerConfig | None = None,
    *,
    variant: str = "auto",
    provider: str = "auto",
    threads: int | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
) -> Reranker:
    """A reranker as :func:`serve` loads it: the same plan and workers as :func:`load_embedder`."""
    from ..runtime.reranker import Reranker

    return _first_engine(Reranker, model, config, variant, provider, threads, revision, cache_dir)


def _first_engine(
    cls: Callable[..., _E],
    model: str | Path,
    config: ServerConfig | None,
    variant: str,
    provider: str,
    threads: int | None,
    revision: str | None,
    cache_dir: str | Path | None,
) -> _E:
    """``cls`` (Embedder or Reranker) on the server's first worker's engine for ``model``."""
    from ..cache import resolve_model

    cfg = config or ServerConfig()
    plan = server_plan(resolve_model(model, revision, cache_dir), cfg, variant, provider, threads)
    return cls(*_first_worker(plan, cfg))


def task_of(folder: Path) -> str:
    """What an exported folder's manifest says the model does (``embed`` or ``rerank``)."""
    from ..manifest import Manifest

    return str(Manifest.load(folder).task.value)


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
    rerank_model: str | Path | None = None,
) -> None:
    """Load the model, then serve until SIGTERM/SIGINT. ``model``: an exported folder, or a hub id
    (at ``revision``) or model folder with an export in ``cache_dir`` (``dmeta_embed.cache``); an
    embedder, or a reranker (its manifest's ``task`` says), served alone. ``rerank_model``: a
    reranker served beside the embedder ``model`` (the same kinds of source; its latest revision).

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
    extra = None if rerank_model is None else locate(rerank_model, None, cache_dir)
    if extra is not None and extra.kind is Kind.FOLDER and cfg.rerank_model_name is None:
        cfg = replace(cfg, rerank_model_name=extra.name)
    sources = [s for s in (source, extra) if s is not None]

    def load() -> Loaded:
        return _load_models(
            ensure(source), None if extra is None else ensure(extra), cfg, variant, provider, threads
        )

    app: Starlette | LoadingApp
    exporting = [s for s in sources if must_export(s)]
    if exporting:
        for s in exporting:
            require_export(s, quick=True)  # a base install is told before any port is bound
        app = LoadingApp(
            load,
            cfg,
            status="exporting",
            detail="; ".join(f"exporting {s.name} into {s.folder} ({TYPICAL})" for s in exporting),
        )
    else:
        loaded = load()
        app = create_app(loaded.embedder, cfg, reranker=loaded.reranker)
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
        url = f"http://{host}:{port}"
        for m in model_app.state.service.models.all():
            plan = m.model.plan
            say(
                "serving %s %r (%s, %s) on %s",
                m.task.value,
                m.name,
                plan.variant.value,
                plan.provider.value,
                url,
            )

    if isinstance(app, LoadingApp):
        app.on_ready = serving

        def stop(e: BaseException) -> None:
            server.should_exit = True  # serve() raises the error once the server has stopped

        app.on_error = stop
        names = ", ".join(s.name for s in exporting)
        say("exporting %s, then serving on http://%s:%d (/ready: 503 until then)", names, host, port)
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


def _load_models(
    folder: Path,
    rerank_folder: Path | None,
    cfg: ServerConfig,
    variant: str,
    provider: str,
    threads: int | None,
) -> Loaded:
    """``folder``'s model as its manifest's task says, and the reranker beside it. ``variant``,
    ``provider`` and ``threads`` apply to both."""
    from .models import Loaded

    def load(f: Path, rerank: bool) -> Any:
        loader = load_reranker if rerank else load_embedder
        return loader(f, cfg, variant=variant, provider=provider, threads=threads)

    # every folder's task checked before any model is loaded (loading takes seconds)
    main_reranks = task_of(folder) == "rerank"
    if rerank_folder is None:
        main = load(folder, main_reranks)
        return Loaded(reranker=main) if main_reranks else Loaded(embedder=main)
    if main_reranks:
        raise ModelLoadError(
            f"{folder}: --model is a reranker; beside --rerank-model, pass an embedding model"
        )
    if task_of(rerank_folder) != "rerank":
        raise ModelLoadError(f"{rerank_folder}: --rerank-model is an embedding model, not a reranker")
    return Loaded(embedder=load(folder, False), reranker=load(rerank_folder, True))
