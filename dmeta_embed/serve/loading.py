"""The server while its model is still being exported: ``/health`` answers, nothing else does yet.

``serve`` with a hub id or a model folder that has no export yet binds its port at once and
serves this app while the export (minutes) runs on a thread: ``/health`` 200, ``/ready`` 503 with
Retry-After and what is happening, every other route 503 (``Kind.LOADING``). Once the model is
loaded, the app made by ``create_app`` takes every request, and its own ``/ready`` answers 503
until the batcher has warmed up, then 200. A failed load is handed to ``on_error`` (``serve``
stops the server and exits with the error).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from ..runtime import Embedder
from .app import TEI_PATHS, create_app, json_response
from .config import ServerConfig
from .errors import STATUS, Kind, RequestError, refusal
from .models import Loaded

log = logging.getLogger(__name__)


class LoadingApp:
    """An ASGI app serving the model(s) ``load`` returns (an ``Embedder``, or ``Loaded``: an
    embedder, a reranker or both), once it has returned; until then
    ``/health`` 200 and 503 elsewhere. ``status`` and ``detail``: what ``/ready`` says meanwhile
    (``"exporting"``, and where to). ``on_error``: called on the event loop with the exception when
    ``load`` fails (default: log it); ``on_ready``: with the model's app once it serves."""

    def __init__(
        self,
        load: Callable[[], Embedder | Loaded],
        config: ServerConfig | None = None,
        *,
        status: str = "loading",
        detail: str = "",
        warmup: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_ready: Callable[[Starlette], None] | None = None,
    ) -> None:
        self.load = load
        self.config = config or ServerConfig()
        self.status, self.detail = status, detail
        self.warmup = warmup
        self.on_error = on_error or (lambda e: log.error("could not load the model: %s", e))
        self.on_ready = on_ready
        #: the model's app, once loaded: it takes every request from then on
        self.app: Starlette | None = None
        #: why the load failed, once it has
        self.error: BaseException | None = None
        self._since = time.monotonic()
        self._task: asyncio.Future[None] | None = None
        self._stack = AsyncExitStack()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif self.app is not None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await self._not_ready(scope["path"])(scope, receive, send)

    def _not_ready(self, path: str) -> Any:
        if path == "/health":
            return json_response({"status": "ok"})
        waited = round(time.monotonic() - self._since)
        if path == "/ready":
            status = "failed" if self.error is not None else self.status
            detail = str(self.error) if self.error is not None else self.detail
            body = {"status": status, "detail": detail, "seconds": waited}
            return json_response(body, 503, {"Retry-After": str(STATUS[Kind.LOADING].retry_after)})
        why = f"the model is not loaded yet ({self.status} for {waited} s); retry later"
        out = refusal(RequestError(why, Kind.LOADING), tei=path in TEI_PATHS)
        return json_response(out.body, out.status, out.headers)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._task is not None:
                    self._task.cancel()
                await self._stack.aclose()  # the model's app: its batcher finishes the queue
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        loaded: asyncio.Future[Embedder | Loaded] = loop.create_future()

        def settle(result: Embedder | Loaded | None, error: BaseException | None) -> None:
            if loaded.done():
                return
            if error is not None:
                loaded.set_exception(error)
            else:
                loaded.set_result(result)  # type: ignore[arg-type]

        def work() -> None:
            try:
                result, error = self.load(), None
            except BaseException as e:  # noqa: BLE001 - every failure goes back to the loop
                result, error = None, e
            try:
                loop.call_soon_threadsafe(settle, result, error)
            except RuntimeError:  # the server stopped during the export: nobody is waiting
                pass

        # a daemon thread, not the loop's executor: a server stopped during an export exits at once
        # (an executor's threads are joined at exit, which would wait for the export to end)
        threading.Thread(target=work, name="dmeta-embed-load", daemon=True).start()
        self._task = asyncio.ensure_future(self._serve_when_loaded(loaded))

    async def _serve_when_loaded(self, loaded: asyncio.Future[Embedder | Loaded]) -> None:
        try:
            result = await loaded
            models = result if isinstance(result, Loaded) else Loaded(embedder=result)
            # on a thread: several workers start their engines (seconds), while /health answers
            app = await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: create_app(
                    models.embedder, self.config, reranker=models.reranker, warmup=self.warmup
                ),
            )
            await self._stack.enter_async_context(app.router.lifespan_context(app))
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - reported to on_error, not lost in a task
            self.error = e
            self.on_error(e)
            return
        self.app = app
        if self.on_ready is not None:
            self.on_ready(app)
