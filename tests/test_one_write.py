"""``ray_proxy.OneWrite``: a response's head and body reach the socket in one write, so a server
killed between the app's two messages has sent nothing (a proxy sends the request again), not
headers without a body (which no proxy can).

A uvicorn server in a subprocess whose app sends its head, then its body a second later; the
server is SIGKILLed in between. Without the middleware the client has the head and then a
closed connection; with it, a closed connection and not one byte.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers import free_port

pytest.importorskip("uvicorn")

SERVER = textwrap.dedent(
    """
    import asyncio, sys
    import uvicorn
    from dmeta_embed.serve.ray_proxy import OneWrite

    port, http, wrap = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        path = scope["path"]
        head = {"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"4")]}
        if path == "/stream":
            head["headers"] = [(b"content-type", b"text/plain")]
            await send(head)
            await send({"type": "http.response.body", "body": b"ab", "more_body": True})
            await asyncio.sleep(0.05)
            await send({"type": "http.response.body", "body": b"cd"})
            return
        await send(head)
        if path == "/slow":
            print("head sent", flush=True)
            await asyncio.sleep(30)
        await send({"type": "http.response.body", "body": b"body"})

    config = uvicorn.Config(OneWrite(app) if wrap else app, port=port, http=http,
                            log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    config.load()
    print("ready", flush=True)
    asyncio.run(server.serve())
    """
)


def start(http: str, wrap: bool) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), http, "1" if wrap else "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            assert time.monotonic() < deadline, "the server did not listen"
            time.sleep(0.05)


def read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def read_response(sock: socket.socket) -> bytes:
    out = b""
    while b"\r\n\r\n" not in out or not out.endswith((b"body", b"0\r\n\r\n")):
        chunk = sock.recv(65536)
        assert chunk, out
        out += chunk
    return out


HTTPS = [h for h in ("h11", "httptools") if h != "httptools" or __import__("importlib").util.find_spec(h)]


@pytest.mark.parametrize("http", HTTPS)
@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "one-write"])
def test_a_server_killed_between_head_and_body_sends_all_or_nothing(http: str, wrap: bool) -> None:
    proc, port = start(http, wrap)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            assert proc.stdout is not None and proc.stdout.readline().strip() == "head sent"
            time.sleep(0.2)  # uvicorn has written the head by now, if it writes it alone
            proc.send_signal(signal.SIGKILL)
            got = read_all(sock)
    finally:
        proc.kill()
        proc.wait()
    if wrap:
        assert got == b""
    else:
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("http", HTTPS)
def test_responses_through_one_write_are_whole_and_the_connection_is_kept(http: str) -> None:
    proc, port = start(http, True)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            for _ in range(2):  # keep-alive: a second request on the same connection
                sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                got = read_response(sock)
                assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\nbody"), got
            # a streamed body passes as it comes (chunked)
            sock.sendall(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
            got = read_response(sock)
            assert b"transfer-encoding: chunked" in got.lower() and got.endswith(b"2\r\ncd\r\n0\r\n\r\n")
            # the client asks to close: the whole response, then the close
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            got = read_all(sock)
            assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\nbody"), got
    finally:
        proc.kill()
        proc.wait()
