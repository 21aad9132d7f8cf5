"""Helpers shared by several test modules (a test module never imports another one, nor the
benchmark harness: what two of them need lives here)."""

from __future__ import annotations

import json
import random
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dmeta_embed.errors import ExportError
from dmeta_embed.texts import EN, MIXED, ZH

#: texts whose tokenisation must match Hugging Face's: scripts, emoji, full-width, whitespace
TOKENIZE_CASES = (
    ZH[:4] + EN[:3] + MIXED + ["😀🚀 emoji 表情", "ＡＢＣ１２３　全角", "Ünïcödé café", "tab\tand\nnewline"]
)


def mixed_texts(n: int, seed: int = 0, long_chars: int = 2200) -> list[str]:
    """``n`` seeded texts of varied length, in no particular order: ~70 % one sentence (a query),
    ~25 % a passage of 3–12 sentences, ~5 % (at least one) past 1,024 tokens, so batches mix
    padding lengths and the truncation path."""
    rng = random.Random(f"mixed-texts:{seed}")
    pool = ZH * 3 + EN + MIXED

    def passage(k: int) -> str:
        return "".join(rng.choice(pool) for _ in range(k))

    out = []
    for i in range(n):
        r = rng.random()
        if i == n // 2 or r >= 0.95:
            text = ""
            while len(text) < long_chars:
                text += passage(8)
            out.append(text)
        elif r >= 0.70:
            out.append(passage(rng.randint(3, 12)))
        else:
            out.append(rng.choice(pool))
    return out


def assert_same_tokens_as_hf(folder: Path, src: Path) -> None:
    """The exported folder's tokenizer gives Hugging Face's ids (truncated at max length)."""
    from transformers import AutoTokenizer

    from dmeta_embed import Embedder

    emb = Embedder.load(folder, variant="fp32")
    hf = AutoTokenizer.from_pretrained(src)
    texts = TOKENIZE_CASES + ["长" * 3000]
    ours = emb.tokenizer.encode(texts).ids
    theirs = hf(texts, truncation=True, max_length=emb.max_length)["input_ids"]
    assert ours == theirs


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (closed again: the server started next binds it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve_command(model: Path, port: int, variant: str, *extra: str, host: str = "127.0.0.1") -> list[str]:
    """The argv of ``dmeta-embed serve`` run by this interpreter: ``model``'s ``variant`` on
    ``host:port``, then ``extra`` options (tests/test_serve.py and
    benchmarks/investigations/serve_load.py start the server in a subprocess with it)."""
    return [
        sys.executable,
        "-m",
        "dmeta_embed.cli",
        "serve",
        "-m",
        str(model),
        "--host",
        host,
        "--port",
        str(port),
        "--variant",
        variant,
        *extra,
    ]


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a thread, on a port the OS picks; always stopped on exit."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        end = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < end, "server did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def model_folder(path: Path, model_type: str = "bert") -> Path:
    """A folder that looks like a transformers model to the resolver (config.json); no real weights."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    (path / "model.safetensors").write_bytes(b"weights")
    return path


class FakeExport:
    """Stands in for ``cache.run_export``: copies an exported folder after ``delay`` seconds (or
    once ``gate`` is set), counting calls; ``fail`` writes part of the folder, then raises."""

    def __init__(self, exported: Path, delay: float = 0.0, fail: bool = False) -> None:
        self.exported, self.delay, self.fail = exported, delay, fail
        self.calls: list[tuple[str, Path, str | None]] = []
        self.gate: threading.Event | None = None
        self._lock = threading.Lock()

    def __call__(self, model: str, output: Path, revision: str | None) -> None:
        with self._lock:
            self.calls.append((model, output, revision))
        if self.gate is not None:
            assert self.gate.wait(60)
        time.sleep(self.delay)
        if self.fail:
            output.mkdir()
            (output / "model.onnx").write_bytes(b"half")
            raise ExportError("the fake export failed")
        shutil.copytree(self.exported, output)
