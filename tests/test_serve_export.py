"""``serve`` of a model that needs exporting first: the port answers at once (``/health`` 200,
``/ready`` and every other route 503) while the export runs, then the model serves; a failed
export stops the real process with one error line and a non-zero status. The export is a fake
gated by an Event (the app), or fails early on an unsupported model (the process)."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from dmeta_embed import cache  # noqa: E402
from dmeta_embed.cache import ensure, locate  # noqa: E402
from dmeta_embed.errors import ExportError  # noqa: E402
from dmeta_embed.runtime import Embedder  # noqa: E402
from dmeta_embed.serve import ServerConfig, load_embedder  # noqa: E402
from dmeta_embed.serve.loading import LoadingApp  # noqa: E402
from tests.helpers import FakeExport, free_port, model_folder, serve_command  # noqa: E402

TEXTS = ["维生素C可以预防感冒吗", "今天天气很好", "a short English query"]


def wait_until(check, seconds: float = 60) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_ready_is_503_while_exporting_then_the_model_serves(
    tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeExport(tiny_export)
    fake.gate = threading.Event()
    monkeypatch.setattr(cache, "run_export", fake)
    source = locate("org/name", cache_dir=tmp_path / "cache")
    app = LoadingApp(
        lambda: load_embedder(ensure(source, progress=None), variant="fp32"),
        ServerConfig(),
        status="exporting",
        detail=f"exporting org/name into {source.folder}",
    )
    with TestClient(app) as c:
        wait_until(lambda: len(fake.calls) == 1)  # the export runs in the background
        assert c.get("/health").json() == {"status": "ok"}
        r = c.get("/ready")
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.json()["status"] == "exporting" and str(source.folder) in r.json()["detail"]
        r = c.post("/v1/embeddings", json={"input": TEXTS})
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.json()["error"]["code"] == "loading" and "exporting" in r.json()["error"]["message"]
        r = c.post("/embed", json={"inputs": TEXTS})  # TEI's route answers in TEI's shape
        assert r.status_code == 503 and "error_type" in r.json()
        assert c.get("/info").status_code == 503 and c.get("/no/such/route").status_code == 503
        fake.gate.set()
        wait_until(lambda: c.get("/ready").status_code == 200)
        assert app.app is not None and app.error is None
        r = c.post("/v1/embeddings", json={"input": TEXTS})
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
        want = Embedder.load(source.folder, variant="fp32").encode(TEXTS)
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert c.get("/info").json()["variant"] == "fp32"
    assert len(fake.calls) == 1


def test_a_failed_load_is_reported_and_ready_says_so(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def load() -> Embedder:
        raise ExportError("no such luck")

    app = LoadingApp(load, status="exporting", on_error=errors.append)
    with TestClient(app) as c:
        wait_until(lambda: bool(errors))
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["status"] == "failed"
        assert r.json()["detail"] == "no such luck" and c.get("/health").status_code == 200
    assert len(errors) == 1 and isinstance(errors[0], ExportError) and app.error is errors[0]


def test_cli_serve_binds_at_once_and_exits_1_when_the_export_fails(tmp_path: Path) -> None:
    """The real command on a model folder the export refuses (an unsupported architecture): the
    port answers while the export starts, then the process stops with one Error line, status 1."""
    src = model_folder(tmp_path / "gpt", model_type="gpt2")
    port = free_port()
    root = tmp_path / "cache"
    cmd = [*serve_command(src, port, "auto"), "--cache-dir", str(root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[str, int] = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            while proc.poll() is None and "ready" not in seen:
                try:
                    seen["health"] = c.get("/health").status_code
                    seen["ready"] = c.get("/ready").status_code
                except httpx.TransportError:
                    time.sleep(0.05)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert seen == {"health": 200, "ready": 503}  # served while the export ran
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "unsupported architecture" in lines[0], err
    assert "Traceback" not in err and "exporting it once into" in err
    assert [p.suffix for p in root.iterdir()] == [".lock"]  # no entry left behind
