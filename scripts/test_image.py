"""The container images, end to end (make test-image, make test-image-export).

cpu (IMAGE): a tiny random BERT exported on the host and mounted read-only; the served vectors
equal the host's ``Embedder.encode``; the server is not root; the image's HEALTHCHECK passes; the
API key from DMETA_EMBED_API_KEY is enforced; SIGTERM drains and exits 0.
cpu-export (--export-image): the same model's *source* folder as ``--model``: exported on start
into the /cache volume and served; a second start reuses that export.

Run from the repository root with the venv that has the exporter:
    .venv/bin/python scripts/test_image.py [--podman CMD] [--export-image TAG] IMAGE
The containers share the host's network (scripts/podman.sh) and bind 127.0.0.1 only; every wait
is bounded and every container is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.random_models

TEXTS = ["hello container", "一个很短的句子", "a longer sentence, to pad the batch " * 8]
KEY = f"test-key-{os.getpid()}"
UID = 10001  # the images' user: the cache volume must be writable by it
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"test-image [{time.monotonic() - T0:.0f}s]: {msg}", flush=True)


class Podman:
    def __init__(self, command: str) -> None:
        self.cmd = shlex.split(command)
        self.names: list[str] = []

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        res = subprocess.run([*self.cmd, *args], capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            sys.exit(f"FAIL: podman {' '.join(args[:2])}: {res.stderr.strip()[-2000:]}")
        return res.stdout.strip()

    def start(self, name: str, image: str, mounts: list[str], port: int, *args: str) -> str:
        self.names.append(name)
        volumes = [a for m in mounts for a in ("-v", m)]
        env = ["-e", f"DMETA_EMBED_API_KEY={KEY}", "-e", "DMETA_EMBED_HOST=127.0.0.1"]
        self("run", "-d", "--name", name, *volumes, *env, "-e", f"DMETA_EMBED_PORT={port}", image, *args)
        return name

    def stop_exit_code(self, name: str) -> str:
        # podman stop sends the image's STOPSIGNAL (SIGTERM) and waits up to 30 s before SIGKILL
        self("stop", "-t", "30", name, timeout=60)
        return self("inspect", "--format", "{{.State.ExitCode}}", name)

    def logs(self, name: str) -> str:
        res = subprocess.run([*self.cmd, "logs", name], capture_output=True, text=True, timeout=30)
        return res.stdout + res.stderr

    def cleanup(self) -> None:
        for name in self.names:
            subprocess.run([*self.cmd, "rm", "-f", name], capture_output=True, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(port: int, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=None if body is None else json.dumps(body).encode()
    )
    req.add_header("Content-Type", "application/json")
    if auth:
        req.add_header("Authorization", f"Bearer {KEY}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


def wait_ready(podman: Podman, name: str, port: int, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            if call(port, "/ready", auth=False)[0] == 200:
                return
        except OSError:
            pass  # not listening yet
        running = podman("inspect", "--format", "{{.State.Running}}", name, check=False)
        if running != "true" or time.monotonic() > deadline:
            print(podman.logs(name)[-3000:], file=sys.stderr)
            sys.exit(f"FAIL: {name}: /ready not 200 within {limit_s:.0f} s (running: {running})")
        time.sleep(0.5)


def embeddings(port: int) -> np.ndarray:
    status, body = call(port, "/v1/embeddings", {"input": TEXTS, "model": "m"})
    assert status == 200, f"FAIL: /v1/embeddings with the key: {status}"
    rows = sorted(body["data"], key=lambda d: d["index"])
    return np.array([d["embedding"] for d in rows], dtype=np.float32)


def same_vectors(got: np.ndarray, want: np.ndarray, atol: float, what: str) -> None:
    assert got.shape == want.shape, f"FAIL: shape {got.shape} != {want.shape}"
    diff = float(np.abs(got - want).max())
    say(f"{what}: {got.shape}, max abs diff vs the host's Embedder.encode {diff:.1e} (bar {atol:.0e})")
    assert diff <= atol, f"FAIL: {what}: max abs diff {diff} > {atol}"


def test_cpu(podman: Podman, image: str, model: Path, want: np.ndarray) -> None:
    port = free_port()
    name = podman.start(
        f"dmeta-embed-test-{os.getpid()}",
        image,
        [f"{model}:/model:ro"],
        port,
        "--model",
        "/model",
        "--variant",
        "fp32",
        "--no-spin",
    )
    say(f"{image} on 127.0.0.1:{port}, the export mounted read-only")
    wait_ready(podman, name, port, 120)
    same_vectors(embeddings(port), want, 1e-5, "vectors")

    for path, body in (("/v1/embeddings", {"input": ["x"], "model": "m"}), ("/info", None)):
        status = call(port, path, body, auth=False)[0]
        assert status == 401, f"FAIL: {path} without the key gave {status}, not 401"
    assert call(port, "/info")[0] == 200, "FAIL: /info with the key"
    say("API key: 401 without it, 200 with it")

    uid = podman("exec", name, "id", "-u")
    assert uid != "0", "FAIL: the server runs as root"
    say(f"runs as uid {uid}")
    # the image's HEALTHCHECK, run once by hand (podman schedules it through systemd, absent here)
    podman("healthcheck", "run", name)  # exit status 1 when unhealthy: fails here
    say("HEALTHCHECK passes")

    code = podman.stop_exit_code(name)
    if code != "0":
        print(podman.logs(name)[-2000:], file=sys.stderr)
        sys.exit(f"FAIL: exit code {code} after SIGTERM")
    say("SIGTERM: exited 0")


def test_export(podman: Podman, image: str, src: Path, cache: Path, want: np.ndarray) -> None:
    # the image exports with PyPI's newest torch and transformers, the host with its own: the same
    # bar holds (measured 0.0 here, transformers 5.25 in the image, 4.57 on the host)
    mounts = [f"{src}:/src:ro", f"{cache}:/cache"]
    for attempt in ("first", "second"):
        port = free_port()
        name = podman.start(
            f"dmeta-embed-test-export-{attempt}-{os.getpid()}",
            image,
            mounts,
            port,
            "--model",
            "/src",
            "--variant",
            "fp32",
            "--no-spin",
        )
        say(f"{image}, {attempt} start, --model the source folder, /cache a volume")
        wait_ready(podman, name, port, 300)
        same_vectors(embeddings(port), want, 1e-5, f"{attempt} start's vectors")
        logs = podman.logs(name)
        manifests = list(cache.glob("dmeta-embed/exports/*/manifest.json"))
        if attempt == "first":
            assert "exporting it once into /cache/dmeta-embed/exports/" in logs, "FAIL: no export logged"
            assert len(manifests) == 1, f"FAIL: exports in the cache: {manifests}"
            made = manifests[0].stat().st_mtime_ns
        else:
            assert "exporting" not in logs, "FAIL: exported again"
            assert [m.stat().st_mtime_ns for m in manifests] == [made], "FAIL: the cache's export changed"
        code = podman.stop_exit_code(name)
        assert code == "0", f"FAIL: exit code {code} after SIGTERM"
    say("exported once into the cache, reused on the second start; SIGTERM exits 0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", nargs="?", help="the cpu image to test (e.g. dmeta-embed:cpu)")
    ap.add_argument("--export-image", help="also (or only) test this cpu-export image")
    ap.add_argument("--podman", default=os.environ.get("PODMAN", "scripts/podman.sh"))
    args = ap.parse_args()
    podman = Podman(args.podman)

    from dmeta_embed import Embedder
    from dmeta_embed.export import export_model
    from tests.random_models import build_model

    with tempfile.TemporaryDirectory(prefix="dmeta-embed-image-test.") as tmp:
        work = Path(tmp)
        # fp32 both sides: the variant every engine computes the same way; int8, bf16 and fp16
        # run kernels that depend on the CPU and on the engine's release, and the image may
        # install a newer onnxruntime than the host's venv has
        say("exporting a tiny random BERT (fp32) on the host")
        src = build_model(work / "src", "tiny")
        export_model(str(src), work / "model", variants=("fp32",))
        want = Embedder.load(work / "model", variant="fp32", provider="cpu").encode(TEXTS)
        for path in work.rglob("*"):
            path.chmod(path.stat().st_mode | 0o055)  # readable by the image's user
        work.chmod(0o755)
        try:
            if args.image:
                test_cpu(podman, args.image, work / "model", want)
            if args.export_image:
                cache = work / "cache"
                cache.mkdir()
                if os.geteuid() == 0:
                    os.chown(cache, UID, UID)
                else:
                    cache.chmod(0o777)
                test_export(podman, args.export_image, src, cache, want)
        finally:
            podman.cleanup()
    say("passed")


if __name__ == "__main__":
    main()
