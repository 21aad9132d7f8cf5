"""Server workers (``--workers auto|N``): the auto rule with the machine's facts injected, the
pool that runs N batches at once from the one batcher, its answers, ``/info`` and ``/metrics``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from dmeta_embed.runtime import Embedder
from dmeta_embed.runtime.plan import make_plan
from dmeta_embed.runtime.workers import Workers, numa_nodes, parse_cpulist, split_for, workers_for

# -- the rule -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpus", "nodes", "quota", "engine", "expected"),
    [
        (1, 1, None, "onnxruntime", (1, 1)),
        (2, 1, None, "onnxruntime", (1, 2)),  # this machine: a lone request keeps both cores
        (4, 1, None, "onnxruntime", (1, 4)),
        (8, 1, None, "onnxruntime", (1, 8)),  # 8 threads on one short query is still well used
        (16, 1, None, "onnxruntime", (2, 8)),
        (32, 1, None, "onnxruntime", (4, 8)),
        (64, 1, None, "onnxruntime", (8, 8)),
        (128, 1, None, "onnxruntime", (8, 16)),  # at most 8 sessions: each holds the weights
        (128, 1, None, "openvino", (16, 8)),  # streams share one compiled model
        (64, 2, None, "onnxruntime", (8, 8)),
        (8, 2, None, "onnxruntime", (1, 8)),  # 4 cores a node: not worth a worker each
        (12, 2, None, "onnxruntime", (2, 6)),  # one worker per node, even under TARGET_THREADS
        (24, 2, None, "onnxruntime", (3, 8)),
        (32, 2, None, "onnxruntime", (4, 8)),
        (64, 1, 2.5, "onnxruntime", (1, 2)),  # a fractional quota rounds down
        (64, 1, 4.9, "onnxruntime", (1, 4)),
        (64, 1, 16.5, "onnxruntime", (2, 8)),
        (8, 1, 0.5, "onnxruntime", (1, 1)),  # under one core: still one thread
        (8, 1, 12.0, "onnxruntime", (1, 8)),  # a quota above the CPUs changes nothing
        (64, 2, None, "cuda", (1, 64)),
    ],
)
def test_workers_for(
    cpus: int, nodes: int, quota: float | None, engine: str, expected: tuple[int, int]
) -> None:
    split = workers_for(cpus, nodes, quota, engine)
    assert split == Workers(*expected)
    assert split.workers * split.threads <= max(1, int(min(cpus, quota or cpus)))


def test_numa_nodes_counts_nodes_with_cpus(tmp_path: Path) -> None:
    for name, cpus in (("node0", "0-15"), ("node1", "16-31"), ("node2", ""), ("possible", "0-2")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cpulist").write_text(cpus + "\n")
    assert numa_nodes(tmp_path) == 2  # node2 is memory only; "possible" is not a node
    assert numa_nodes(tmp_path / "absent") == 1


def test_numa_nodes_counts_only_the_nodes_of_the_affinity(tmp_path: Path) -> None:
    # two nodes, each with its CPUs' hyperthread siblings 16 higher (a common layout)
    for name, cpus in (("node0", "0-7,16-23"), ("node1", "8-15,24-31")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cpulist").write_text(cpus + "\n")
    assert numa_nodes(tmp_path, frozenset(range(8))) == 1  # taskset -c 0-7: one node
    assert numa_nodes(tmp_path, frozenset({0, 8})) == 2
    assert numa_nodes(tmp_path, frozenset({16, 17})) == 1  # siblings on node0
    assert numa_nodes(tmp_path, frozenset({99})) == 1  # none held: still one node
    assert parse_cpulist("0-2,5,7-8\n") == frozenset({0, 1, 2, 5, 7, 8})
    assert parse_cpulist("") == frozenset()


def test_machine_facts_follow_the_affinity() -> None:
    """A process pinned to fewer CPUs sizes the rule from those (``taskset -c 0``), as the
    scaling benchmark's servers rely on; read in a child so this process's affinity is untouched."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no sched_setaffinity on this platform")
    first = min(os.sched_getaffinity(0))
    code = (
        "import os; from dmeta_embed.runtime.workers import machine_facts, resolve_workers; "
        f"os.sched_setaffinity(0, {{{first}}}); print(machine_facts()[0], *resolve_workers(None, 'onnxruntime'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1", "1"]


def test_split_for_a_plan(tiny_export: Path) -> None:
    def plan(threads: int) -> Any:
        return make_plan(tiny_export, "fp32", "cpu", "server", threads=threads)

    assert split_for(plan(2), None) == Workers(1, 2)  # one worker keeps the plan's threads
    assert split_for(plan(16), None) == Workers(2, 8)  # --threads stands in for the cores
    assert split_for(plan(3), 2) == Workers(2, 1)
    assert split_for(plan(2), 1) == Workers(1, 2)


def test_cli_workers_option() -> None:
    from dmeta_embed.cli.server import WorkersType

    kind = WorkersType()
    assert kind.convert("auto", None, None) is None and kind.convert("3", None, None) == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(Exception, match="neither 'auto'"):
            kind.convert(bad, None, None)
    from dmeta_embed.cli import cli

    out = CliRunner().invoke(cli, ["serve", "--help"])
    assert "--workers" in out.output


# -- the pool, over HTTP ----------------------------------------------------------------------------------

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from dmeta_embed.serve import ServerConfig, create_app, load_embedder  # noqa: E402
from tests.helpers import running  # noqa: E402

MIN_COS = 0.99999  # fp32: batch composition changes a vector by float rounding only


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def embedder(tiny_export: Path) -> Embedder:
    return Embedder.load(tiny_export, variant="fp32", threads=2)


def metric(client: Any, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return float("nan")


def busy(client: Any, worker: int) -> float:
    return metric(client, f'dmeta_embed_worker_busy{{worker="{worker}"}}')


@pytest.fixture
def serving(embedder: Embedder) -> Iterator[Callable[[int], Any]]:
    """``serving(n)``: a client of an app with ``n`` workers, ready."""
    with ExitStack() as stack:

        def start(n: int) -> Any:
            base = stack.enter_context(running(create_app(embedder, ServerConfig(workers=n, max_wait_ms=1))))
            client = stack.enter_context(httpx.Client(base_url=base, timeout=30))
            end = time.monotonic() + 30
            while client.get("/ready").status_code != 200:
                assert time.monotonic() < end
                time.sleep(0.02)
            return client

        yield start


def gated_runs(embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[int]]:
    """From now on each inference waits for the event; the list records how many ran at once."""
    release = threading.Event()
    active = [0]
    peaks: list[int] = []
    lock = threading.Lock()
    original = embedder.pipeline.run

    def run(tok: Any, **kw: Any) -> np.ndarray:
        with lock:
            active[0] += 1
            peaks.append(active[0])
        try:
            assert release.wait(30)
            return original(tok, **kw)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(embedder.pipeline, "run", run)
    return release, peaks


@pytest.mark.parametrize("n", [1, 2])
def test_workers_run_batches_at_once(
    n: int, embedder: Embedder, serving: Callable[[int], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = serving(n)
    info = client.get("/info").json()["workers"]
    assert info == {"asked": n, "count": n, "threads": 2 // n}
    assert [busy(client, w) for w in range(n)] == [0.0] * n
    release, peaks = gated_runs(embedder, monkeypatch)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.post, "/v1/embeddings", json={"input": ["第一个请求"]})
        end = time.monotonic() + 30
        while busy(client, 0) != 1:  # the first request runs on worker 0
            assert time.monotonic() < end
            time.sleep(0.01)
        second = pool.submit(client.post, "/v1/embeddings", json={"input": ["第二个请求"]})
        # with two workers the second runs beside the first; with one it waits in the queue
        while (
            (len(peaks) < 2 or busy(client, 1) != 1)
            if n == 2
            else (metric(client, "dmeta_embed_queue_depth") != 1)
        ):
            assert time.monotonic() < end
            time.sleep(0.01)
        release.set()
        answers = [first.result(), second.result()]
    assert [r.status_code for r in answers] == [200, 200]
    assert max(peaks) == n and metric(client, "dmeta_embed_batch_size_count") == 2
    assert [busy(client, w) for w in range(n)] == [0.0] * n


def test_two_workers_answer_as_encode_under_concurrency(
    embedder: Embedder, serving: Callable[[int], Any]
) -> None:
    client = serving(2)
    rng = np.random.default_rng(1)
    words = ["维生素", "感冒", "天气", "银行卡", "embedding", "模型", "香港", "手表", "query"]
    requests = [
        ["".join(rng.choice(words, rng.integers(1, 30))) for _ in range(rng.integers(1, 6))]
        for _ in range(64)
    ]

    def call(texts: list[str]) -> np.ndarray:
        r = client.post("/v1/embeddings", json={"input": texts})
        assert r.status_code == 200, r.text
        return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, requests))
    for texts, got in zip(requests, results, strict=True):
        assert cos(got, embedder.encode(texts)).min() >= MIN_COS
    # both workers served batches (each series counts its busy periods only as 0/1 samples, so
    # check the runs: more than one batch, and the answers above routed right)
    assert metric(client, "dmeta_embed_batch_size_count") >= 2


def test_served_embedder_is_the_first_worker(tiny_export: Path) -> None:
    """``serve`` starts N sessions, not N + 1: its embedder runs on the first worker's threads."""
    cfg = ServerConfig(workers=2)
    served = load_embedder(tiny_export, cfg, variant="fp32", threads=2)
    assert served.plan.threads == 1
    pool = create_app(served, cfg).state.service.models.embedding.batcher.pool
    assert len(pool.workers) == 2 and pool.workers[0].runner is served.pipeline.runner
    assert pool.workers[1].runner is not served.pipeline.runner
    one = load_embedder(tiny_export, ServerConfig(workers=1), variant="fp32", threads=2)
    assert one.plan.threads == 2  # one worker: the plan as before


def test_openvino_workers_are_requests_on_one_compiled_model(tiny_export: Path, embedder: Embedder) -> None:
    """The served embedder's runner is the first worker's request; the pool adds the others on
    the same compiled model (one copy of the weights), each answering as onnxruntime does."""
    pytest.importorskip("openvino")
    from dataclasses import replace

    from dmeta_embed.manifest import Provider
    from dmeta_embed.runtime.engines import Streams, start_runner, start_workers

    plan = make_plan(tiny_export, "fp32", "cpu", "server", threads=2, cache_dir=None)
    f32 = (("INFERENCE_PRECISION_HINT", "f32"),)  # the fp32 file, not AMX's default bf16
    plan = replace(plan, choice=replace(plan.choice, provider=Provider.OPENVINO, engine_properties=f32))
    first = start_runner(plan, streams=2)
    lanes = start_workers(plan, first, Workers(2, 1))
    assert lanes[0] is first and lanes[1].owner is first.owner  # type: ignore[attr-defined]
    texts = ["维生素C可以预防感冒吗", "今天天气很好"]
    tok = embedder.pipeline.prepare(texts).tokens
    for lane in lanes:
        assert cos(embedder.pipeline.run(tok, runner=lane), embedder.encode(texts)).min() >= MIN_COS
    # the workers' compiled model keeps one request per worker, whatever the plan's streams mode
    # (no throughput queue, no bulk twin): each worker runs its own batch
    adaptive = start_runner(replace(plan, streams=Streams.ADAPTIVE), streams=2).owner  # type: ignore[attr-defined]
    assert (adaptive.streams, adaptive.in_flight, adaptive._bulk) == (2, 1, False)
