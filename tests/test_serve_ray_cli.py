"""``dmeta-embed serve --ray`` as users run it: two of them on one host, each starting its own
local Ray with the default ingress, answer what ``encode`` answers without colliding (HAProxy's
ports and files are per run), and each stops on SIGTERM with exit 0, leaving no HAProxy folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from dmeta_embed.runtime import Embedder
from tests.helpers import free_port, serve_command

pytest.importorskip("ray.serve", reason="the ray extra is not installed: pip install 'dmeta-embed[ray]'")


def processes_below(pid: int) -> list[str]:
    """The names of ``pid``'s descendants (Linux /proc)."""
    names, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in (Path("/proc") / str(p) / "task").iterdir():
                for child in (task / "children").read_text().split():
                    todo.append(int(child))
                    names.append((Path("/proc") / child / "comm").read_text().strip())
        except OSError:
            continue
    return names


def hap_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("dmeta-hap-*")}


def test_two_servers_on_one_host_each_start_their_own_ray_and_stop_clean(
    tiny_export: Path, tmp_path: Path
) -> None:
    from dmeta_embed.serve.ray_proxy import HAPROXY_ENV, haproxy_found

    if not Path("/proc/self/task").is_dir():
        pytest.skip("no /proc to list the servers' processes")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", HAPROXY_ENV))}
    before = hap_folders()
    ports = [free_port(), free_port()]
    logs = [tmp_path / f"serve-{i}.log" for i in range(2)]
    procs = [
        subprocess.Popen(
            serve_command(tiny_export, port, "fp32", "--replicas", "1", "--replica-cpus", "1", "--ray"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )
        for port, log in zip(ports, logs, strict=True)
    ]
    try:
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        deadline = time.monotonic() + 240
        waiting = set(urls)
        while waiting:
            for proc, log in zip(procs, logs, strict=True):
                assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"not ready: {sorted(waiting)}"
            for url in list(waiting):
                try:
                    if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                        waiting.discard(url)
                except httpx.HTTPError:
                    pass
            time.sleep(1)
        want = Embedder.load(tiny_export, variant="fp32").encode(["天气", "银行卡 query"])
        for url in urls:
            r = httpx.post(f"{url}/v1/embeddings", json={"input": ["天气", "银行卡 query"]}, timeout=60)
            assert r.status_code == 200, r.text
            got = np.asarray([d["embedding"] for d in r.json()["data"]], np.float32)
            np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
        # the default ingress: Ray's HAProxy where its binary is, one per server
        for proc in procs:
            assert ("haproxy" in processes_below(proc.pid)) == haproxy_found()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=120))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
    assert codes == [0, 0], [log.read_text()[-3000:] for log in logs]
    assert hap_folders() <= before  # each removed its HAProxy folder
