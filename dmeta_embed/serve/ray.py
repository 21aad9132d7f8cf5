"""``serve --ray``: the server's app (``serve.app.create_app``: same routes, answers, API key and
errors) as Ray Serve replicas behind Ray's ingress (its Python proxy, or HAProxy: ``serve.ray_proxy``), one
engine per replica on its own CPUs.

The driver (``serve --ray``, or Ray Serve's controller running :func:`app` for a KubeRay
``RayService``) makes the load plan once, with threads = a replica's CPUs, and ships it as data
(``LoadPlan.to_dict``); each replica makes it again on its node (``LoadPlan.from_dict``), so every
replica runs the same variant and answers alike wherever Ray places it. The model folder must be
a path every node reads (a shared volume). Each replica records its plan in Ray's key-value store;
``/info`` lists the deployment's running replicas with them. Ray asks each replica for its health
every few seconds (:meth:`RayReplica.check_health`: a text through the batcher and the engine);
one that fails is replaced.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require, require_feature
from ..errors import DmetaEmbedError, ModelLoadError
from ..runtime.cpu import available_cpus
from ..runtime.plan import LoadPlan
from .replicas import APP_NAME, DEPLOYMENT_NAME, LOGGING, RaySpec, deployment_options

require_feature("server")
ray = require("ray", "ray.serve")
from ray import serve  # noqa: E402 - only once ray is known to be installed

from . import embedder_for, server_plan  # noqa: E402
from .app import create_app  # noqa: E402
from .batcher import Overloaded  # noqa: E402
from .ray_proxy import HAPROXY_PORTS, haproxy_found, hard_nofile, ray_env, write_error_file  # noqa: E402

log = logging.getLogger(__name__)
#: Ray's key-value store: one entry per replica, its plan (what ``/info`` lists)
KV_NAMESPACE = "dmeta-embed"


class EngineBroken(DmetaEmbedError):
    """A replica's engine failed its health probe: Ray replaces the replica."""


class RayReplica:
    """One replica: the plan its driver made, started here on ``spec.replica_cpus`` threads."""

    def __init__(self, spec_args: dict[str, Any], plan: dict[str, Any]) -> None:
        spec = RaySpec.from_args(spec_args)
        key = None
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env, "")
            if not key:
                # refusing to start beats serving without the key the operator asked for
                raise ModelLoadError(
                    f"api_key_env={spec.api_key_env}: not set or empty on this replica's node"
                )
        self.spec = spec
        self.cfg = replace(spec.config, api_key=key)
        self.plan = LoadPlan.from_dict(plan, threads=spec.replica_cpus)
        self.embedder = embedder_for(self.plan, self.cfg)
        ctx = serve.get_replica_context()
        self.app_name, self.deployment, self.replica_id = (
            ctx.app_name,
            ctx.deployment,
            ctx.replica_id.unique_id,
        )
        self.asgi = create_app(
            self.embedder, self.cfg, extra_info=self.replicas_info, warm_before_serving=True
        )

    def __serve_build_asgi_app__(self) -> Any:
        """Ray Serve's late-bound ingress: the app is built in the constructor, with the engine."""
        split = self.asgi.state.service.models.embedder().batcher.pool.split
        summary = {**_plan_summary(self.plan), "workers": split.workers, "threads": split.threads}
        _kv_put(
            self._key(self.replica_id),
            # the node's id as well as its IP: nodes may share an IP (several on one host)
            {
                "node": ray.util.get_node_ip_address(),
                "node_id": ray.get_runtime_context().get_node_id(),
                "pid": os.getpid(),
                **summary,
            },
        )
        return self.asgi

    def _key(self, replica_id: str) -> str:
        return f"{self.app_name}/{self.deployment}/{replica_id}"

    async def check_health(self) -> None:
        """Ray's health check: one text through the batcher and this replica's engine. A failed
        warm-up or a failed inference raises (Ray replaces the replica); a full queue is busy, not broken."""
        svc = self.asgi.state.service
        if svc.models.embedder().batcher.warm_up_error is not None:
            raise EngineBroken(f"warm-up failed: {svc.models.embedder().batcher.warm_up_error}")
        prepared = self.embedder.pipeline.prepare(["health check"], count=False)
        try:
            vectors = await svc.models.embedder().batcher.submit(prepared.tokens)
        except Overloaded:
            return
        except Exception as e:
            raise EngineBroken(f"the engine failed its health probe: {e}") from e
        if not bool(np.isfinite(vectors).all()):
            raise EngineBroken("the engine returned non-finite values for its health probe")

    async def replicas_info(self) -> dict[str, Any]:
        """``/info``'s ``replicas``: the deployment's running replicas, each with its plan."""
        controller = _controller()
        details = await controller.get_serve_instance_details.remote()
        dep = details["applications"][self.app_name]["deployments"][self.deployment]
        running = [r for r in dep["replicas"] if str(r["state"]).endswith("RUNNING")]
        each = [
            {
                "id": r["replica_id"],
                "this": r["replica_id"] == self.replica_id,
                **(_kv_get(self._key(r["replica_id"])) or {}),
            }
            for r in running
        ]
        s = self.spec
        asked: dict[str, Any] = (
            {"replicas": s.replicas} if s.autoscale is None else {"autoscale": list(s.autoscale)}
        )
        return {
            "replicas": {
                "count": len(running),
                "target": dep.get("target_num_replicas"),
                "asked": asked,
                "cpus_each": s.replica_cpus,
                "each": each,
            }
        }

    def __del__(self) -> None:
        try:
            _kv_del(self._key(self.replica_id))
        except Exception:  # noqa: BLE001 - Ray may already be gone at interpreter exit
            pass


def _plan_summary(plan: LoadPlan) -> dict[str, Any]:
    d = plan.to_dict()
    return {
        k: d[k]
        for k in (
            "variant",
            "provider",
            "engine",
            "int8_weights",
            "cpu_class",
            "spin",
            "max_batch_tokens",
            # the CPUs a replica may run on, against its threads, decide OpenVINO's pinning
            "affinity",
            "cpu_pinning",
        )
    }


def _controller() -> Any:
    # Ray Serve's controller actor, by the name Serve gives it: its instance details (the
    # dashboard's /api/serve/applications/) are where running replicas are listed; there is no
    # public call for them that a replica can await
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    return ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)


def _kv_put(key: str, value: dict[str, Any]) -> None:
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(key, json.dumps(value), namespace=KV_NAMESPACE)


def _kv_get(key: str) -> dict[str, Any] | None:
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(key, namespace=KV_NAMESPACE)
    return None if raw is None else dict(json.loads(raw))


def _kv_del(key: str) -> None:
    from ray.experimental.internal_kv import _internal_kv_del

    _internal_kv_del(key, namespace=KV_NAMESPACE)


#: the deployment: Ray Serve's ASGI ingress around :class:`RayReplica` (the app is built per replica)
Embeddings = serve.deployment(name=DEPLOYMENT_NAME)(serve.ingress()(RayReplica))


def build(spec: RaySpec, cluster_cpus: float | None = None, key: str | None = None) -> Any:
    """The Ray Serve application for ``spec``: the plan made here, bound to the deployment with
    :func:`~dmeta_embed.serve.replicas.deployment_options`. ``key``: the API key, set as
    ``spec.api_key_env`` in the replicas' environment (on Kubernetes a Secret sets it instead)."""
    plan = server_plan(Path(spec.model), spec.config, spec.variant, spec.provider, threads=spec.replica_cpus)
    options = deployment_options(spec, cluster_cpus)
    if key is not None and spec.api_key_env:
        options["ray_actor_options"]["runtime_env"] = {"env_vars": {spec.api_key_env: key}}
    return Embeddings.options(**options).bind(spec.to_args(), plan.to_dict())


def app(args: dict[str, Any]) -> Any:
    """Ray Serve's application builder (``import_path: dmeta_embed.serve.ray:app`` with ``args``,
    in a KubeRay ``RayService``'s ``serveConfigV2`` or ``serve run``): see ``RaySpec.from_args``."""
    spec = RaySpec.from_args(args)
    return build(spec, None if spec.replicas or spec.autoscale else ray.cluster_resources().get("CPU", 1))


def run(
    spec: RaySpec,
    *,
    address: str | bool = True,
    host: str = "127.0.0.1",
    port: int = 8080,
    key: str | None = None,
) -> None:
    """Deploy ``spec`` on Ray and serve on ``host:port`` until SIGTERM/SIGINT, then delete the
    application (its replicas finish what they hold). ``address``: True for ``ray.init()``
    (RAY_ADDRESS, else a new local Ray), or an address (``auto``, ``ray://head:10001``), as
    ``embed-corpus --ray``. ``key``: the API key, shipped to the replicas as ``spec.api_key_env``."""
    started = not ray.is_initialized()
    folder = None
    if started:
        # the Ray started here passes its environment to the processes it starts: a lost request
        # gets a 503 to retry, or with HAProxy (a folder and ports of its own) is sent again
        # (serve.ray_proxy); a variable set wins
        # a short path: Ray puts its unix sockets in a folder per node below it (108 bytes at most)
        folder = tempfile.mkdtemp(prefix="dmeta-hap-")
        write_error_file(folder)
        ports = free_ports(len(HAPROXY_PORTS))
        env = ray_env(
            os.environ, folder, ports, available_cpus(), haproxy=haproxy_found(), nofile=hard_nofile()
        )
        os.environ.update(env)
        try:
            ray.init(address=None if address is True else str(address), logging_level=logging.WARNING)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve.start(http_options={"host": host, "port": port}, logging_config=LOGGING)
        cpus = ray.cluster_resources().get("CPU", 1)
        try:
            serve.run(build(spec, cpus, key), name=APP_NAME, route_prefix="/", blocking=False)
        except (
            RuntimeError
        ) as e:  # Ray's "Deploying application ... failed": the replicas' errors are in their logs
            raise ModelLoadError(
                f"Ray Serve could not start the replicas: {str(e).splitlines()[0]} (the replicas' "
                "errors: Ray's logs, logs/serve/replica_*.log in the session folder)"
            ) from e
        print(
            f"serving {spec.model} on http://{host}:{port} as Ray Serve replicas of {spec.replica_cpus} "
            f"CPU ({cpus:g} in the cluster); SIGTERM or Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(1.0):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        try:
            serve.delete(APP_NAME)
        finally:
            if started:
                serve.shutdown()
                ray.shutdown()
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


def free_ports(n: int) -> list[int]:
    """``n`` ports free now on every interface (the kernel's picks, all held until all are chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


__all__ = ["Embeddings", "EngineBroken", "RayReplica", "app", "build", "free_ports", "run"]
