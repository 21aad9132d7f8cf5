"""HTTP routes: OpenAI's ``/v1/embeddings``, TEI's ``/embed`` and ``/tokenize``, health,
readiness, info, metrics; the rerank routes (``serve.rerank``) when the server hosts a reranker.

The routes parse, queue and render; every step from text to vector is the runtime's
(``Embedder.pipeline``: ``prepare`` → the batcher's ``run`` → ``runtime.pipeline.finish``), so the
server returns exactly what ``Embedder.encode`` returns for the same text and options.

Nothing a request sends names a file or a model to load: ``model`` is checked to be a string and
otherwise ignored (each route serves the one model of its task the server was started with).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ..runtime import Embedder
from ..runtime.choice import batch_invariance_problem
from ..runtime.options import OutputSpec
from ..runtime.pipeline import Prepared, finish
from ..runtime.tokenize import Tokenized
from .config import ServerConfig
from .errors import (
    REQUEST_FIELDS,
    RERANK_FIELDS,
    Fields,
    Kind,
    RequestError,
    error_body,
    refusal,
    to_request_error,
)
from .info import info_body
from .metrics import Metrics
from .models import Hosted, Served, Task, host, token_limit, warm_up, warm_up_reranker
from .rerank import check_reranker, rerank_routes
from .schemas import EmbedRequest, parse_openai, parse_tei, parse_tokenize

if TYPE_CHECKING:
    from ..runtime.reranker import Reranker

log = logging.getLogger(__name__)
#: a request still waiting after this long starts watching for its client's disconnect; most are
#: served sooner, and the watch has a cost per request (always on, it lowered req/s measurably)
WATCH_AFTER_S = 0.1

#: requests with at most this many characters are tokenised on the event loop (tens of µs);
#: larger ones go to a thread so one big request does not stall everyone else's I/O
INLINE_TOKENIZE_CHARS = 4096
#: responses with more floats than this, and request bodies larger than this, are (de)serialised
#: on a thread, for the same reason
INLINE_JSON_FLOATS = 100_000
INLINE_JSON_BYTES = 1 << 20

Handler = Callable[[Request], Awaitable[Response]]
#: more fields for ``/info``, from whoever runs the app (Ray Serve: the deployment's replicas)
InfoHook = Callable[[], Awaitable[dict[str, Any]]]
#: TEI's routes: their errors have TEI's shape and statuses
TEI_PATHS = frozenset({"/embed", "/tokenize", "/rerank"})


def json_response(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return Response(content, status, headers=headers, media_type="application/json")


class Service:
    """The hosted models (each with its batcher) and the settings: what every route needs."""

    def __init__(
        self, models: Hosted, cfg: ServerConfig, metrics: Metrics, extra_info: InfoHook | None = None
    ) -> None:
        self.models = models
        self.extra_info = extra_info
        self.cfg = cfg
        self.metrics = metrics
        self._key = cfg.api_key.encode() if cfg.api_key else None

    @property
    def embedder(self) -> Embedder:
        """The embedder, or the refusal saying none is loaded."""
        return self.models.embedder().model

    def check_auth(self, request: Request) -> None:
        if self._key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken does not tell an attacker how much of the key matched
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._key):
            raise RequestError(
                "missing or wrong API key: send 'Authorization: Bearer <key>'", Kind.UNAUTHORIZED
            )

    async def read_json(self, request: Request) -> Any:
        limit = self.cfg.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_big(limit)
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_big(limit)
                chunks.append(chunk)
        except ClientDisconnect as e:  # nobody will read the answer; no traceback in the log
            raise RequestError("the client disconnected before sending the whole body", Kind.MALFORMED) from e
        raw = b"".join(chunks)
        if not raw.strip():
            raise RequestError("the request body is empty; send a JSON object", Kind.MALFORMED)
        try:
            if len(raw) <= INLINE_JSON_BYTES:
                return json.loads(raw)
            return await asyncio.get_running_loop().run_in_executor(None, json.loads, raw)
        except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise RequestError(f"the request body is not valid JSON: {e}", Kind.MALFORMED) from e

    def spec(self, req: EmbedRequest, normalize: bool | None) -> OutputSpec:
        """The request's output options as the runtime checks them (before anything is queued):
        its InputErrors (``truncate_dim``, ``normalize``, ``precision``) go to the edge's table."""
        e = self.embedder
        return e.pipeline.output_spec(req.dimensions, normalize, req.precision, prompt=e.resolve_prompt())

    async def prepare(self, req: EmbedRequest) -> Prepared:
        """The runtime's prompt, tokenise and truncate step: on the event loop for small requests,
        on a thread for big ones (one large request must not stall everyone else's I/O)."""
        e = self.embedder

        def run() -> Prepared:
            return e.pipeline.prepare(req.texts, e.resolve_prompt(req.prompt_name), req.truncate)

        if sum(map(len, req.texts)) <= INLINE_TOKENIZE_CHARS:
            return run()
        return await asyncio.get_running_loop().run_in_executor(None, run)

    async def embed(self, request: Request, req: EmbedRequest, spec: OutputSpec) -> tuple[np.ndarray, int]:
        """Prepare, queue, wait, finish: the request's vectors (input order) and its token count.
        ``Overloaded`` (the queue is full, or the server stopped before the request ran) goes to
        the edge's table.

        A client that disconnects while its request waits gets its work dropped from the queue:
        under overload, clients time out and retry, and serving the abandoned copies first is
        how a busy server tips into serving nobody."""
        prepared = await self.prepare(req)
        vectors = await self.infer(request, self.models.embedder(), prepared.tokens)
        return finish(vectors, spec), int(prepared.lengths.sum())

    async def infer(self, request: Request, served: Served[Any], tok: Tokenized) -> np.ndarray:
        """``tok`` queued on ``served``'s batcher: its rows, once run (``Overloaded``, 503 and 499
        as :meth:`_wait` says)."""
        return await self._wait(request, served.batcher.submit(tok), served)

    async def _wait(
        self, request: Request, future: asyncio.Future[np.ndarray], served: Served[Any]
    ) -> np.ndarray:
        """The future's rows, or 503 after request_timeout_s, or 499 once the client has left."""
        timeout = self.cfg.request_timeout_s
        done, _ = await asyncio.wait({future}, timeout=min(WATCH_AFTER_S, timeout))
        gone: asyncio.Future[None] | None = None
        if not done:  # queued a while: from now on also watch for the client leaving
            gone = asyncio.ensure_future(_client_gone(request))
            either: set[asyncio.Future[Any]] = {future, gone}
            try:
                done, _ = await asyncio.wait(
                    either, timeout=max(0.0, timeout - WATCH_AFTER_S), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                gone.cancel()
        if future not in done:
            future.cancel()  # frees its place in the queue; a batch already running just discards it
            if gone is not None and gone in done:
                served.metrics.abandoned.inc()
                raise RequestError(
                    "the client closed the connection before its answer was ready", Kind.CLIENT_CLOSED
                )
            raise RequestError(f"the request was not served within request_timeout_s={timeout}", Kind.TIMEOUT)
        return future.result()

    # -- routes -------------------------------------------------------------------------------------

    async def openai_embeddings(self, request: Request) -> Response:
        self.models.embedder()  # a server without one says so before reading the body
        req = parse_openai(await self.read_json(request), self.cfg)
        # a cut keeps the export's choice: a normalised model's shorter vectors are unit length
        # again (as OpenAI's are), a raw model's stay raw
        cut = req.dimensions is not None and req.dimensions != self.embedder.dim
        spec = self.spec(req, True if cut and self.embedder.manifest.normalize else None)
        vectors, tokens = await self.embed(request, req, spec)
        if req.encoding_format == "base64":
            # little-endian float32, OpenAI's wire format, for every precision: the OpenAI client
            # asks for base64 by default and decodes float32, so quantized values travel as the
            # float32 of their integers (exact) rather than as bytes it would misread.
            # astype only byte-swaps on a big-endian host (once, not per row)
            little = vectors.astype("<f4", copy=False)
            rows: list[Any] = [base64.b64encode(v.tobytes()).decode("ascii") for v in little]
        else:
            rows = vectors.tolist()
        body = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": r} for i, r in enumerate(rows)],
            "model": self.models.embedder().name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return await self.big_json(body, vectors.size if req.encoding_format == "float" else 0)

    async def tei_embed(self, request: Request) -> Response:
        self.models.embedder()  # a server without one says so before reading the body
        req = parse_tei(await self.read_json(request), self.cfg)
        spec = self.spec(req, req.normalize)
        vectors, _ = await self.embed(request, req, spec)
        return await self.big_json(vectors.tolist(), vectors.size)

    async def tei_tokenize(self, request: Request) -> Response:
        """TEI's ``/tokenize``: each input's tokens (id, text, special, start, stop: character
        offsets into the text as the model sees it, the prompt first), truncated as embedding
        truncates, so each list's length is the count the model is fed."""
        self.models.embedder()  # a server without one says so before reading the body
        req = parse_tokenize(await self.read_json(request), self.cfg)
        tokens = self.embedder.tokens(
            req.texts, prompt_name=req.prompt_name, add_special_tokens=req.add_special_tokens
        )
        body = [[t.__dict__ for t in row] for row in tokens]
        return await self.big_json(body, sum(map(len, tokens)))

    async def big_json(self, body: object, floats: int) -> Response:
        if floats <= INLINE_JSON_FLOATS:
            return json_response(body)
        return await asyncio.get_running_loop().run_in_executor(None, json_response, body)

    async def models_list(self, request: Request) -> Response:
        data = [
            {"id": m.name, "object": "model", "created": 0, "owned_by": "dmeta-embed", "task": m.task.value}
            for m in self.models.all()
        ]
        return json_response({"object": "list", "data": data})

    async def health(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    @property
    def is_ready(self) -> bool:
        """Every hosted model is loaded and warmed up."""
        return all(m.batcher.ready for m in self.models.all())

    async def ready(self, request: Request) -> Response:
        if self.is_ready:
            return json_response({"status": "ready"})
        return json_response({"status": "warming up"}, 503, {"Retry-After": "1"})

    async def info(self, request: Request) -> Response:
        body = info_body(self)
        if self.extra_info is not None:
            body.update(await self.extra_info())
        return json_response(body)

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=self.metrics.content_type)


def _too_big(limit: int) -> RequestError:
    """Built only when raised: most requests are within the limit."""
    return RequestError(f"the request body is larger than max_body_bytes={limit}", Kind.MAX_BODY_BYTES)


async def _client_gone(request: Request) -> None:
    """Return once the client has disconnected. The body is already read, so the server's next
    ASGI message for this request can only be ``http.disconnect``."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        if not message.get("more_body"):  # an ASGI server that repeats empty bodies: do not spin
            await asyncio.sleep(0.05)


def _endpoint(
    svc: Service,
    name: str,
    handler: Handler,
    *,
    protected: bool,
    tei: bool = False,
    fields: Fields = REQUEST_FIELDS,
    served: Served[Any] | None = None,
) -> Handler:
    """Wrap a route: API key, latency and status metrics, and the server's edge: every error a
    route lets through becomes OpenAI's or TEI's error response here (``serve.errors.refusal``),
    its fields named by the route's table (``fields``), its token limit ``served``'s."""
    m = svc.metrics

    async def endpoint(request: Request) -> Response:
        start = time.perf_counter()
        m.in_progress.inc()
        try:
            if protected:
                svc.check_auth(request)
            response = await handler(request)
        except Exception as e:
            limit = token_limit(served) if served is not None else 0
            err = to_request_error(e, tei=tei, max_length=limit, fields=fields)
            if err is None:  # a bug must cost one request a 500, never the process
                log.exception("unhandled error in %s", name)
                err = RequestError("internal server error (see the server log)", Kind.INTERNAL)
            out = refusal(err, tei=tei)
            response = json_response(out.body, out.status, out.headers)
        finally:
            m.in_progress.dec()
        m.requests.labels(name, str(response.status_code)).inc()
        m.latency.labels(name).observe(time.perf_counter() - start)
        return response

    return endpoint


Warmup = Callable[[Any], None]


def create_app(
    embedder: Embedder | None = None,
    config: ServerConfig | None = None,
    *,
    reranker: Reranker | None = None,
    warmup: Warmup | None = None,
    extra_info: InfoHook | None = None,
    warm_before_serving: bool = False,
) -> Starlette:
    """The ASGI app serving ``embedder``, ``reranker`` or both, each on its own batcher and
    workers; the batchers start (and warm up) with the app's lifespan. ``warmup(model)`` runs on
    each model's first worker before its first job (None: a few shapes through the model);
    ``extra_info`` adds fields to ``/info``. ``warm_before_serving``: the lifespan's startup
    returns only once warm-up has run, and fails if it failed (for a host that routes to the app
    as soon as it has started and reads no ``/ready``: Ray Serve)."""
    cfg = config or ServerConfig()
    metrics = Metrics()
    embedding = rerank = None
    if embedder is not None:
        embedding = host(Task.EMBED, embedder, cfg, metrics, cfg.model_name)
    if reranker is not None:
        check_reranker(reranker)
        name = cfg.model_name if embedder is None else cfg.rerank_model_name
        rerank = host(Task.RERANK, reranker, cfg, metrics, name)
    svc = Service(Hosted(embedding, rerank), cfg, metrics, extra_info)
    for served in svc.models.all():
        problem = batch_invariance_problem(served.model.manifest, served.model.plan.variant)
        if problem and cfg.batch_size > 1:
            # concurrent requests share batches here: an answer would depend on its neighbours
            log.warning("serving %s with dynamic batching on: %s", served.model.plan.variant.value, problem)

    def first_warmup(served: Served[Any]) -> Callable[[], None]:
        default: Warmup = warm_up if served.task is Task.EMBED else warm_up_reranker
        chosen = warmup or default
        return lambda: chosen(served.model)

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        for served in svc.models.all():
            served.batcher.start(first_warmup(served))
        if warm_before_serving:
            for served in svc.models.all():
                await served.batcher.warmed()
        yield
        await asyncio.gather(*(s.batcher.close(cfg.request_timeout_s) for s in svc.models.all()))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        svc.metrics.requests.labels("other", str(exc.status_code)).inc()
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return json_response(error_body(exc.status_code, message, tei=False), exc.status_code, exc.headers)

    def route(
        path: str, name: str, handler: Handler, method: str, protected: bool = True, task: Task | None = None
    ) -> Route:
        served = {Task.EMBED: embedding, Task.RERANK: rerank}.get(task) if task else None  # type: ignore[call-overload]
        fields = RERANK_FIELDS if task is Task.RERANK else REQUEST_FIELDS
        endpoint = _endpoint(
            svc, name, handler, protected=protected, tei=path in TEI_PATHS, fields=fields, served=served
        )
        return Route(path, endpoint, methods=[method])

    embed = Task.EMBED
    routes = [
        route("/v1/embeddings", "openai", svc.openai_embeddings, "POST", task=embed),
        route("/embeddings", "openai", svc.openai_embeddings, "POST", task=embed),
        route("/v1/models", "models", svc.models_list, "GET"),
        route("/embed", "tei", svc.tei_embed, "POST", task=embed),
        route("/tokenize", "tokenize", svc.tei_tokenize, "POST", task=embed),
        *(route(p, n, h, "POST", task=Task.RERANK) for p, n, h in rerank_routes(svc)),
        route("/health", "health", svc.health, "GET", protected=False),
        route("/ready", "ready", svc.ready, "GET", protected=False),
        route("/info", "info", svc.info, "GET"),
        route("/metrics", "metrics", svc.prometheus, "GET"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.service = svc
    return app
