"""The cpu-ray image as a KubeRay RayService runs it, on one host (make test-image-ray).

Two containers of the image on a podman network of their own, each with its own IP as a pod has:
the head runs ``ray start --head`` with the RayService's ``rayStartParams`` (``num-cpus: 0``: no
replica there), the worker ``ray start --address=HEAD:6379 --num-cpus=2``; both as the image's
non-root user, read-only root filesystem, every capability dropped, a tmpfs on /tmp and a 1 GiB
/dev/shm (the manifest's two emptyDirs), the environment the manifest gives each pod (the API key
only on the worker, as its Secret), Ray's token authentication as the manifest's ``authOptions``
has KubeRay set it (``RAY_AUTH_MODE=token`` and one ``RAY_AUTH_TOKEN``, made for this run as
KubeRay makes its Secret, on both), and a tiny export made on the host read-only at /model. Then
the RayService's ``serveConfigV2``, read from deploy/kuberay/rayservice.yaml with only the replica
counts a 2-CPU worker holds changed, goes to the head with ``serve deploy`` (what KubeRay does),
and the check: Ray refuses a client without the token (the dashboard's serve and jobs APIs: 401;
a GCS client in a third container on the network, with no token or another one: Ray's
AuthenticationError) and lets one with it in; every replica runs on the worker node, ``/info``
lists each with that node (IP and Ray's node id), ``/ready`` answers on both nodes' ingress, the
vectors equal the host's ``Embedder.encode`` (fp32), the API key is enforced (the ingress needs no
Ray token), and SIGTERM stops both nodes.
``--cli`` then runs ``dmeta-embed serve --ray=auto`` inside the head against the same cluster.

Not proved here: Kubernetes itself (KubeRay's operator, its Services and probes, the autoscaler
adding pods), more than one host. Every wait is bounded; containers and network go at the end.
    .venv/bin/python scripts/test_image_ray.py [--podman CMD] [--cli] IMAGE
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # test_image: one style, its helpers
from test_image import KEY, TEXTS, Podman, same_vectors, say  # noqa: E402

from dmeta_embed.serve.replicas import APP_NAME  # noqa: E402 - standard library only

ROOT = Path(__file__).resolve().parents[1]
RAYSERVICE = ROOT / "deploy" / "kuberay" / "rayservice.yaml"
#: what a 2-CPU worker holds: two replicas of 1 CPU (the manifest: 2 to 8 of 2 CPUs on 4-CPU pods)
WORKER_CPUS = 2
SWAPPED_ARGS = {"replica_cpus": 1, "autoscale": "2:2"}
REPLICAS = 2  # autoscale's MIN = MAX
#: HAProxy's answer when no replica is left (Dockerfile, build-ray; the manifest points there)
IMAGE_ERROR_FILE = "/opt/venv/share/dmeta-embed/replica-lost.http"
#: the CLI's own path (--cli): its port on each node's ingress
CLI_PORT = 8080
#: a GCS client in a container of its own: exits 3 when Ray refuses it (AuthenticationError), 0
#: once it lists the cluster's nodes (the count on stdout)
GCS_PROBE = """import sys
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError
try:
    nodes = GcsClient(address=sys.argv[1]).get_all_node_info()
except AuthenticationError:
    sys.exit(3)
print(len(nodes))
"""


class Failed(Exception):
    """A check failed: the message says which; the nodes' logs are printed before exiting."""


def http(
    url: str,
    body: Any = None,
    auth: bool = True,
    method: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    req.add_header("Content-Type", "application/json")
    if auth:
        req.add_header("Authorization", f"Bearer {KEY}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            try:
                return r.status, json.loads(raw or b"null")
            except json.JSONDecodeError:
                return r.status, raw.decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def wait_for(what: str, limit_s: float, probe: Any, alive: Any = None) -> Any:
    """Call ``probe`` until it returns something truthy; Failed after ``limit_s`` or once ``alive``
    says a container stopped."""
    deadline = time.monotonic() + limit_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            got = probe()
            if got:
                return got
        except OSError as e:  # not listening yet
            last = e
        if alive is not None and not alive():
            raise Failed(f"{what}: a container stopped while waiting")
        time.sleep(1.0)
    raise Failed(f"{what}: not within {limit_s:.0f} s (last error: {last})")


class Cluster:
    """The RayService's two pods as containers: their flags, environment and mounts from the manifest."""

    def __init__(self, podman: Podman, image: str, work: Path, service: dict[str, Any]) -> None:
        self.podman, self.image, self.work = podman, image, work
        cluster = service["spec"]["rayClusterConfig"]
        self.head_spec = cluster["headGroupSpec"]
        (self.worker_spec,) = cluster["workerGroupSpecs"]
        self.network = f"dmeta-embed-ray-{os.getpid()}"
        self.head = f"{self.network}-head"
        self.worker = f"{self.network}-worker"
        self.ips: dict[str, str] = {}
        # authOptions {mode: token}: KubeRay makes a Secret with a random token and sets
        # RAY_AUTH_MODE and RAY_AUTH_TOKEN on every Ray container; here one token per run
        self.token = secrets.token_hex(32) if cluster.get("authOptions", {}).get("mode") == "token" else None
        (head,) = self.head_spec["template"]["spec"]["containers"]
        self.ports = {p["name"]: int(p["containerPort"]) for p in head["ports"]}  # gcs, dashboard, serve

    def pod_flags(self, group: dict[str, Any]) -> list[str]:
        """What the pod's spec asks of its container, as podman flags."""
        pod = group["template"]["spec"]
        (c,) = pod["containers"]
        sec = c["securityContext"]
        user = f"{sec['runAsUser']}:{pod['securityContext']['runAsGroup']}"
        flags = ["--network", self.network, "--user", user, "--entrypoint", "ray"]
        # open files as Docker 25+ and containerd 2 give a container (soft 1024, hard 524288;
        # here at most the host's hard limit): HAProxy raises its soft limit to what Ray's
        # maxconn asks (~10,300); scripts/containers.conf's 1024:1024 would stop it
        host = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        hard = 524288 if host == resource.RLIM_INFINITY else min(host, 524288)
        flags += ["--ulimit", f"nofile=1024:{hard}", "--ulimit", "nproc=1024:1024"]
        if sec.get("readOnlyRootFilesystem"):
            # only what the manifest mounts is writable: no tmpfs podman would add by itself
            flags += ["--read-only", "--read-only-tmpfs=false"]
        if sec.get("capabilities", {}).get("drop") == ["ALL"]:
            flags += ["--cap-drop=all"]
        if sec.get("allowPrivilegeEscalation") is False:
            flags += ["--security-opt=no-new-privileges"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for m in c["volumeMounts"]:
            v = volumes[m["name"]]
            if "persistentVolumeClaim" in v:  # the model: the host's export
                flags += ["-v", f"{self.work / 'model'}:{m['mountPath']}:ro"]
            elif v["emptyDir"].get("medium") == "Memory" and m["mountPath"] == "/dev/shm":
                flags += ["--shm-size", quantity(v["emptyDir"]["sizeLimit"])]
            else:  # a disk emptyDir: a tmpfs of its size, writable by the pod's fsGroup
                size = quantity(v["emptyDir"]["sizeLimit"])
                flags += ["--tmpfs", f"{m['mountPath']}:rw,exec,size={size},mode=1777"]
        for e in c.get("env", []):
            # the worker's Secret (the API key): this run's key
            value = e["value"] if "value" in e else KEY
            flags += ["-e", f"{e['name']}={value}"]
        if self.token is not None:
            flags += ["-e", "RAY_AUTH_MODE=token", "-e", f"RAY_AUTH_TOKEN={self.token}"]
        # Ray's usage statistics off: nothing outside is reachable here
        return [*flags, "-e", "RAY_USAGE_STATS_ENABLED=0"]

    def start(self) -> None:
        self.podman("network", "create", self.network)
        head_params = start_params(self.head_spec["rayStartParams"])
        # what KubeRay adds to the head's `ray start`: the dashboard (serve deploy's API) on the pod IP
        self.run(self.head, self.head_spec, ["--head", "--dashboard-host=0.0.0.0", *head_params])
        self.ips[self.head] = self.ip(self.head)
        say(f"head {self.ips[self.head]}: ray start --head {' '.join(head_params)}")
        wait_for("the head's dashboard", 120, lambda: self.dashboard("/api/version")[0] == 200, self.alive)
        worker_params = [*start_params(self.worker_spec["rayStartParams"]), f"--num-cpus={WORKER_CPUS}"]
        head_address = f"{self.ips[self.head]}:{self.ports['gcs']}"
        self.run(self.worker, self.worker_spec, [f"--address={head_address}", *worker_params])
        self.ips[self.worker] = self.ip(self.worker)
        say(f"worker {self.ips[self.worker]}: ray start --address={head_address} {' '.join(worker_params)}")
        wait_for("two live Ray nodes", 120, lambda: len(self.nodes()) == 2, self.alive)
        # what each node tells Ray it has: the head no CPU; the object store in /dev/shm (Ray puts
        # it there only when /dev/shm holds all of it; the manifest's rayStartParams size it)
        nodes = self.nodes()
        for name, group, cpus in (
            (self.head, self.head_spec, 0),
            (self.worker, self.worker_spec, WORKER_CPUS),
        ):
            have = nodes[self.ips[name]]["resources_total"]
            store = int(group["rayStartParams"]["object-store-memory"])
            assert (have.get("CPU", 0), have["object_store_memory"]) == (cpus, store), f"FAIL: {name}: {have}"
        say(f"Ray: 2 live nodes; CPUs head 0, worker {WORKER_CPUS}; object store {store >> 20} MiB each")

    def run(self, name: str, group: dict[str, Any], args: list[str]) -> None:
        self.podman.names.append(name)
        # --block: `ray start` stays the container's main process, as KubeRay runs it
        self.podman(
            "run", "-d", "--name", name, *self.pod_flags(group), self.image, "start", "--block", *args
        )

    def ip(self, name: str) -> str:
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        return self.podman("inspect", "--format", fmt, name)

    def alive(self) -> bool:
        states = [self.podman("inspect", "--format", "{{.State.Running}}", n, check=False) for n in self.ips]
        return all(s == "true" for s in states)

    def dashboard(
        self, path: str, body: Any = None, token: bool = True, method: str | None = None
    ) -> tuple[int, Any]:
        """Ray's dashboard API on the head, with the Ray token as KubeRay sends it (``token``)."""
        headers = {"X-Ray-Authorization": f"Bearer {self.token}"} if token and self.token else {}
        url = f"http://{self.ips[self.head]}:{self.ports['dashboard']}{path}"
        return http(url, body, auth=False, method=method, headers=headers)

    def gcs_probe(self, env: dict[str, str]) -> tuple[int, str]:
        """:data:`GCS_PROBE` in a third container on the network (another pod), with ``env``."""
        name = f"{self.network}-probe"
        self.podman.names.append(name)
        flags = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        res = subprocess.run(
            [
                *self.podman.cmd,
                "run",
                "--rm",
                "--name",
                name,
                "--network",
                self.network,
                "--entrypoint",
                "python",
                "-e",
                "RAY_USAGE_STATS_ENABLED=0",
                *flags,
                self.image,
                "-c",
                GCS_PROBE,
                f"{self.ips[self.head]}:{self.ports['gcs']}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return res.returncode, res.stdout.strip()

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Ray's live nodes by IP (each container has its own), from the state API."""
        status, body = self.dashboard("/api/v0/nodes?detail=true")
        if status != 200:
            return {}
        rows = body["data"]["result"]["result"]
        return {n["node_ip"]: n for n in rows if n["state"] == "ALIVE"}

    def url(self, name: str, port: int, path: str) -> str:
        return f"http://{self.ips[name]}:{port}{path}"

    def stop(self, name: str, grace_s: int) -> str:
        """SIGTERM (the image's STOPSIGNAL), SIGKILL after ``grace_s``: the exit code."""
        t0 = time.monotonic()
        self.podman("stop", "-t", str(grace_s), name, timeout=grace_s + 60)
        code = self.podman("inspect", "--format", "{{.State.ExitCode}}", name)
        say(f"{name}: stopped in {time.monotonic() - t0:.1f} s, exit code {code}")
        return code

    def diagnostics(self) -> None:
        for name in self.ips:
            print(f"---- {name}: podman logs", file=sys.stderr)
            print(self.podman.logs(name)[-3000:], file=sys.stderr)
            tail = "tail -n 25 /tmp/ray/session_latest/logs/serve/*.log 2>/dev/null | tail -c 6000"
            print(f"---- {name}: Ray Serve's logs", file=sys.stderr)
            print(self.podman("exec", name, "sh", "-c", tail, check=False, timeout=30), file=sys.stderr)

    def cleanup(self) -> None:
        self.podman.cleanup()
        subprocess.run(
            [*self.podman.cmd, "network", "rm", "-f", self.network], capture_output=True, timeout=60
        )


def quantity(q: str) -> str:
    """A Kubernetes size ("4Gi") as podman's ("4g")."""
    for suffix, unit in (("Gi", "g"), ("Mi", "m"), ("Ki", "k")):
        if q.endswith(suffix):
            return q[: -len(suffix)] + unit
    return q


def start_params(params: dict[str, Any]) -> list[str]:
    """KubeRay's rayStartParams as `ray start` flags."""
    return [f"--{k}={v}" for k, v in params.items()]


def serve_config(service: dict[str, Any]) -> dict[str, Any]:
    """The RayService's serveConfigV2, with only the replica counts a 2-CPU worker holds changed."""
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    (app,) = config["applications"]
    app["args"].update(SWAPPED_ARGS)
    return dict(config)


def deploy(cluster: Cluster, config: dict[str, Any]) -> str:
    """``serve deploy`` on the head, as KubeRay submits serveConfigV2 (with the Ray token: the
    head's environment has it, as KubeRay's request has it in a header); then wait until RUNNING."""
    # the config reaches the head on its stdin, into its /tmp (the manifest's emptyDir): no mount
    # beyond the manifest's; `serve deploy` takes a file by its .yaml name
    res = subprocess.run(
        [
            *cluster.podman.cmd,
            "exec",
            "-i",
            cluster.head,
            "sh",
            "-c",
            "cat >/tmp/serve.yaml && serve deploy /tmp/serve.yaml",
        ],
        input=yaml.safe_dump(config),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if res.returncode != 0:
        raise Failed(f"serve deploy: {res.stderr.strip()[-2000:]}")
    (app,) = config["applications"]
    wait_running(cluster, str(app["name"]))
    return str(app["name"])


def wait_running(cluster: Cluster, name: str) -> None:
    """Until Ray Serve's controller says the application ``name`` runs all its replicas."""

    def running() -> bool:
        status, body = cluster.dashboard("/api/serve/applications/")
        state = body["applications"].get(name, {}) if status == 200 else {}
        if state.get("status") in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise Failed(f"application {name}: {state['status']}: {state.get('message', '')[-2000:]}")
        return state.get("status") == "RUNNING"

    wait_for(f"application {name} RUNNING", 300, running, cluster.alive)


def check_ray_token(cluster: Cluster) -> None:
    """Ray's token authentication, on: a client without the cluster's token is refused by the
    dashboard (its serve and jobs APIs: whoever submits a job runs code) and by the GCS; with it,
    both answer. The serve ingress is not behind it (check_serving: the API key only)."""
    assert cluster.token is not None, "FAIL: the manifest's rayClusterConfig has no authOptions {mode: token}"
    for method, path, body in (
        ("GET", "/api/serve/applications/", None),
        ("POST", "/api/jobs/", {"entrypoint": "id"}),
    ):
        status = cluster.dashboard(path, body, token=False, method=method)[0]
        assert status == 401, f"FAIL: {method} {path} without the Ray token gave {status}, not 401"
    assert cluster.dashboard("/api/serve/applications/")[0] == 200, "FAIL: the dashboard refused the token"
    other = secrets.token_hex(32)
    codes = {
        "no token": cluster.gcs_probe({}),
        "another token": cluster.gcs_probe({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": other}),
        "the token": cluster.gcs_probe({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": str(cluster.token)}),
    }
    want = {"no token": (3, ""), "another token": (3, ""), "the token": (0, "2")}
    assert codes == want, f"FAIL: GCS clients (exit code, nodes listed): {codes}, not {want}"
    say(
        "Ray token: dashboard serve and jobs APIs 401 without it; a GCS client in another container "
        "refused with no token or another one, lists the 2 nodes with it"
    )


def check_replicas_on_worker(cluster: Cluster, app: str, count: int, port: int) -> None:
    """Ray's view (the controller) and /info's: ``count`` replicas, every one on the worker node."""
    nodes = cluster.nodes()
    head, worker = nodes[cluster.ips[cluster.head]], nodes[cluster.ips[cluster.worker]]
    assert head["is_head_node"] and not worker["is_head_node"], f"FAIL: nodes {nodes}"
    _, details = cluster.dashboard("/api/serve/applications/")
    (dep,) = details["applications"][app]["deployments"].values()
    running = [r for r in dep["replicas"] if r["state"] == "RUNNING"]
    assert len(running) == count, f"FAIL: {len(running)} replicas running, not {count}"
    where = {r["node_id"] for r in running}
    assert where == {worker["node_id"]}, f"FAIL: replicas on {where}, the worker is {worker['node_id']}"
    say(f"Ray Serve's controller: {count} replicas running, all on the worker node")

    status, info = http(cluster.url(cluster.head, port, "/info"))
    assert status == 200, f"FAIL: /info with the key: {status} {info}"
    each = info["replicas"]["each"]
    assert info["replicas"]["count"] == count and len(each) == count, (
        f"FAIL: /info replicas {info['replicas']}"
    )
    assert {r["id"] for r in each} == {r["replica_id"] for r in running}, "FAIL: /info's ids are not Ray's"
    for r in each:
        assert (r.get("node_id"), r.get("node")) == (worker["node_id"], worker["node_ip"]), (
            f"FAIL: /info: {r}"
        )
        assert (r["variant"], r["threads"]) == ("fp32", 1), f"FAIL: /info plan: {r}"
    assert len({r["pid"] for r in each}) == count, "FAIL: replicas share a pid"
    engines = sorted({r["engine"] for r in each})
    say(f"/info: {count} replicas, each on the worker ({worker['node_ip']}, its node id), fp32 on {engines}")


def check_ingress(cluster: Cluster) -> None:
    """The manifest's ingress on both nodes: Ray's HAProxy runs, tries a request the manifest's
    number of times, and answers its own 502 and 503 with the image's error file (the last
    errorfile line for each: it wins)."""
    env = {e["name"]: e.get("value") for e in cluster.head_spec["template"]["spec"]["containers"][0]["env"]}
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        say("ingress: Ray's Python proxy (the manifest does not pick HAProxy)")
        return
    for name in (cluster.head, cluster.worker):
        comms = cluster.podman("exec", name, "sh", "-c", "cat /proc/[0-9]*/comm 2>/dev/null").split()
        assert "haproxy" in comms, f"FAIL: no HAProxy process on {name}: {sorted(set(comms))}"
        # Ray writes it in a folder per node: /tmp/haproxy-serve/<node id>/haproxy.cfg
        cfg = cluster.podman("exec", name, "sh", "-c", "cat /tmp/haproxy-serve/*/haproxy.cfg")
        for status in ("502", "503"):
            files = [ln.split()[2] for ln in cfg.splitlines() if ln.split()[:2] == ["errorfile", status]]
            assert files and files[-1] == IMAGE_ERROR_FILE, f"FAIL: {name}: errorfile {status}: {files}"
        retries = [ln.split()[1] for ln in cfg.splitlines() if ln.split()[:1] == ["retries"]]
        want = env.get("RAY_SERVE_HAPROXY_RETRIES")
        assert retries[:1] == ([want] if want else []), f"FAIL: {name}: retries {retries}"
        head = cluster.podman("exec", name, "head", "-c", "40", IMAGE_ERROR_FILE)
        assert head.startswith("HTTP/1.1 503"), f"FAIL: {name}: {IMAGE_ERROR_FILE}: {head!r}"
    say(
        f"ingress: HAProxy on both nodes, {env.get('RAY_SERVE_HAPROXY_RETRIES')} tries a request, "
        f"its own 502 and 503 answered from {IMAGE_ERROR_FILE}"
    )


def check_serving(cluster: Cluster, port: int, want: np.ndarray) -> None:
    """What a client and KubeRay's readiness probes see, on both nodes' ingress."""
    for name in (cluster.head, cluster.worker):
        # KubeRay's readiness probe: Serve starts a node's proxy a little after its replicas run
        ready = cluster.url(name, port, "/ready")
        wait_for(
            f"/ready on {name}'s ingress", 60, lambda u=ready: http(u, auth=False)[0] == 200, cluster.alive
        )
        status, body = http(cluster.url(name, port, "/v1/embeddings"), {"input": TEXTS, "model": "m"})
        assert status == 200, f"FAIL: /v1/embeddings on {name}: {status} {body}"
        rows = sorted(body["data"], key=lambda d: d["index"])
        got = np.array([d["embedding"] for d in rows], dtype=np.float32)
        same_vectors(got, want, 2e-6, f"vectors through {name.rsplit('-', 1)[-1]}'s ingress")
    url = cluster.url(cluster.head, port, "")
    for path, body in (("/v1/embeddings", {"input": ["x"], "model": "m"}), ("/info", None)):
        status = http(url + path, body, auth=False)[0]
        assert status == 401, f"FAIL: {path} without the key gave {status}, not 401"
    say("/ready 200 on both nodes' ingress; API key: 401 without it, 200 with it")


#: exits 0 once Ray Serve's controller actor is gone (1 after a minute)
CONTROLLER_GONE = """
import sys, time
import ray
ray.init(address="auto", logging_level="ERROR")
for _ in range(120):
    try:
        ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
    except ValueError:
        sys.exit(0)
    time.sleep(0.5)
sys.exit("Serve's controller is still there a minute after serve shutdown")
"""


def run_cli(cluster: Cluster, want: np.ndarray) -> None:
    """``dmeta-embed serve --ray=auto`` inside the head, against the cluster (the RayService's
    application deleted first: its replicas hold the worker's CPUs)."""
    subprocess.run(
        [*cluster.podman.cmd, "exec", cluster.head, "serve", "shutdown", "-y"], timeout=120, check=True
    )
    # `serve shutdown` returns before Serve's controller is gone, and a controller shutting down
    # ignores a new deployment (the CLI then waits for a /ready that never comes)
    subprocess.run(
        [*cluster.podman.cmd, "exec", cluster.head, "python", "-c", CONTROLLER_GONE], timeout=120, check=True
    )
    cmd = (
        f"dmeta-embed serve --ray=auto --replicas 2 --replica-cpus 1 --model /model --variant fp32 "
        f"--host 0.0.0.0 --port {CLI_PORT} >/tmp/cli.log 2>&1 & echo $! >/tmp/cli.pid; wait $!; echo $? >/tmp/cli.rc"
    )
    # the key: the CLI ships it to the replicas (runtime_env), as serve --ray does anywhere
    cluster.podman("exec", "-d", "-e", f"DMETA_EMBED_API_KEY={KEY}", cluster.head, "sh", "-c", cmd)
    say(f"head: {cmd.split(' >')[0]}")

    def ready() -> bool:
        return http(cluster.url(cluster.head, CLI_PORT, "/ready"), auth=False)[0] == 200

    wait_for("serve --ray's /ready", 300, ready, cluster.alive)
    wait_running(cluster, APP_NAME)  # /ready: one replica is warm; RUNNING: all of them
    check_replicas_on_worker(cluster, APP_NAME, 2, CLI_PORT)
    check_serving(cluster, CLI_PORT, want)
    cluster.podman("exec", cluster.head, "sh", "-c", "kill -TERM $(cat /tmp/cli.pid)")

    def exited() -> str:
        return cluster.podman("exec", cluster.head, "sh", "-c", "cat /tmp/cli.rc 2>/dev/null", check=False)

    code = wait_for("serve --ray to exit after SIGTERM", 90, exited, cluster.alive)
    assert code == "0", f"FAIL: serve --ray exited {code} after SIGTERM"
    say("serve --ray: SIGTERM, application deleted, exited 0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", help="the cpu-ray image (e.g. dmeta-embed:cpu-ray)")
    ap.add_argument("--cli", action="store_true", help="then serve --ray=auto inside the head")
    ap.add_argument("--podman", default=os.environ.get("PODMAN", "scripts/podman.sh"))
    args = ap.parse_args()
    podman = Podman(args.podman)
    service = yaml.safe_load(RAYSERVICE.read_text())

    from dmeta_embed import Embedder
    from dmeta_embed.export import export_model
    from tests.random_models import build_model

    with tempfile.TemporaryDirectory(prefix="dmeta-embed-ray-image-test.") as tmp:
        work = Path(tmp)
        say("exporting a tiny random BERT (fp32) on the host")
        export_model(str(build_model(work / "src", "tiny")), work / "model", variants=("fp32",))
        want = Embedder.load(work / "model", variant="fp32", provider="cpu").encode(TEXTS)
        for path in work.rglob("*"):
            path.chmod(path.stat().st_mode | 0o055)  # readable by the image's user
        work.chmod(0o755)
        cluster = Cluster(podman, args.image, work, service)
        try:
            cluster.start()
            config = serve_config(service)
            app = deploy(cluster, config)
            port = int(config["http_options"]["port"])
            say(f"serve deploy: the RayService's serveConfigV2 with {SWAPPED_ARGS}: RUNNING")
            check_ray_token(cluster)
            check_replicas_on_worker(cluster, app, REPLICAS, port)
            check_serving(cluster, port, want)
            check_ingress(cluster)
            if args.cli:
                run_cli(cluster, want)
            # KubeRay deletes the pods: SIGTERM, then SIGKILL after the grace period (Kubernetes'
            # default, 30 s, for the head). `ray start --block` answers SIGTERM by draining the
            # node, stopping its processes and exiting 1 (Ray's handler); 137 would be SIGKILL
            grace = int(cluster.worker_spec["template"]["spec"]["terminationGracePeriodSeconds"])
            for name, limit in ((cluster.worker, grace), (cluster.head, 30)):
                code = cluster.stop(name, limit)
                assert code == "1", f"FAIL: {name}: exit code {code} after SIGTERM, not Ray's 1"
        except (Failed, AssertionError, OSError) as e:
            cluster.diagnostics()
            sys.exit(f"FAIL: {e}" if not str(e).startswith("FAIL") else str(e))
        finally:
            cluster.cleanup()
    left = podman("ps", "-a", "--filter", f"name={cluster.network}", "--format", "{{.Names}}")
    assert not left and cluster.network not in podman("network", "ls"), f"FAIL: left behind: {left}"
    say("containers and network removed; passed")


if __name__ == "__main__":
    main()
