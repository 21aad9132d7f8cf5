"""What ``serve --ray`` deploys: the settings of a Ray Serve deployment of the server
(:class:`RaySpec`), read from the CLI or from a KubeRay ``serveConfigV2`` ``args`` block
(:meth:`RaySpec.from_args`), and the Ray Serve options they give (:func:`deployment_options`).

Standard library only: the CLI checks its options, and the tests the options' arithmetic, without Ray.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from .config import ServerConfig

#: the application's name in Ray Serve (``serve status``, the controller's details)
APP_NAME = "dmeta-embed"
#: the deployment's name: its replicas are the actors ``ServeReplica:dmeta-embed:Embeddings``
DEPLOYMENT_NAME = "Embeddings"
#: how often Ray asks each replica whether its engine still answers (``check_health``)
HEALTH_CHECK_PERIOD_S = 10.0
#: Ray Serve's logging for the proxies and replicas: warnings and errors, no access log
LOGGING = {"log_level": "WARNING", "enable_access_log": False}
#: ServerConfig fields an ``args`` block may set (the API key comes from ``api_key_env``, never as a value)
CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(ServerConfig) if f.name != "api_key"}


def parse_autoscale(text: str) -> tuple[int, int]:
    """``"MIN:MAX"`` → ``(MIN, MAX)`` with 0 <= MIN <= MAX and MAX >= 1; else InputError
    (``field="autoscale"``)."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
    if m is None:
        raise InputError(
            f"autoscale {text!r} is not MIN:MAX (two whole numbers, e.g. 1:4)",
            field="autoscale",
            reason="is not MIN:MAX",
        )
    lo, hi = int(m.group(1)), int(m.group(2))
    if hi < 1 or lo > hi:
        raise InputError(
            f"autoscale {text!r}: MAX must be at least 1 and MIN at most MAX",
            field="autoscale",
            reason="needs 0 <= MIN <= MAX and MAX >= 1",
        )
    return lo, hi


@dataclass(frozen=True)
class RaySpec:
    """One deployment of the server on Ray Serve: every replica loads ``model`` (a folder every
    node can read) with ``replica_cpus`` CPUs, which are its onnxruntime threads.

    ``replicas``: a fixed count; ``autoscale``: ``(min, max)`` replicas, Ray's autoscaler between
    them; neither: as many replicas of ``replica_cpus`` as the cluster's CPUs hold (decided when
    deployed). ``api_key_env``: the environment variable each replica reads the API key from (on
    its own node: a Kubernetes Secret, or the variable ``serve --ray`` ships)."""

    model: str
    variant: str = "auto"
    provider: str = "auto"
    replica_cpus: int = 1
    replicas: int | None = None
    autoscale: tuple[int, int] | None = None
    config: ServerConfig = field(default_factory=ServerConfig)
    api_key_env: str | None = None

    def __post_init__(self) -> None:
        if self.replica_cpus < 1:
            raise InputError(
                f"replica_cpus={self.replica_cpus}: a replica needs at least 1 CPU",
                field="replica_cpus",
                reason="must be at least 1",
            )
        if self.replicas is not None and self.replicas < 1:
            raise InputError(
                f"replicas={self.replicas}: at least 1", field="replicas", reason="must be at least 1"
            )
        if self.replicas is not None and self.autoscale is not None:
            raise InputError(
                "give replicas or autoscale, not both", field="autoscale", reason="excludes replicas"
            )
        if self.autoscale is not None:
            parse_autoscale(f"{self.autoscale[0]}:{self.autoscale[1]}")
        if self.config.api_key is not None:
            raise InputError(
                "RaySpec takes the API key's variable (api_key_env), never the key itself: the spec "
                "travels to every replica and into Ray's state",
                field="api_key",
                reason="must be None",
            )

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> RaySpec:
        """A spec from plain data: a KubeRay ``serveConfigV2`` ``args`` block (YAML values, or the
        strings ``serve run ... key=value`` passes). Keys: ``model`` (required), ``variant``,
        ``provider``, ``replica_cpus``, ``replicas``, ``autoscale`` (``"MIN:MAX"``),
        ``api_key_env``, and any :class:`ServerConfig` field but ``api_key``."""
        own = {"model", "variant", "provider", "replica_cpus", "replicas", "autoscale", "api_key_env"}
        unknown = sorted(set(args) - own - set(CONFIG_FIELDS))
        if unknown:
            raise InputError(
                f"unknown argument(s) {', '.join(unknown)}; known: {', '.join(sorted(own | set(CONFIG_FIELDS)))}",
                field=unknown[0],
                reason="is not an argument of dmeta_embed.serve.ray:app",
            )
        if not args.get("model"):
            raise InputError("model is required: a folder every replica can read", field="model")
        config = ServerConfig(
            **{k: _as(k, CONFIG_FIELDS[k].type, v) for k, v in args.items() if k in CONFIG_FIELDS}
        )
        auto = args.get("autoscale")
        return cls(
            model=str(args["model"]),
            variant=str(args.get("variant", "auto")),
            provider=str(args.get("provider", "auto")),
            replica_cpus=_as("replica_cpus", "int", args.get("replica_cpus", 1)),
            replicas=None if args.get("replicas") is None else _as("replicas", "int", args["replicas"]),
            autoscale=None if auto in (None, "") else parse_autoscale(str(auto)),
            config=config,
            api_key_env=args.get("api_key_env") or None,
        )

    def to_args(self) -> dict[str, Any]:
        """The inverse of :meth:`from_args` (what a ``serveConfigV2`` ``args`` block would say)."""
        out: dict[str, Any] = {
            "model": self.model,
            "variant": self.variant,
            "provider": self.provider,
            "replica_cpus": self.replica_cpus,
        }
        if self.replicas is not None:
            out["replicas"] = self.replicas
        if self.autoscale is not None:
            out["autoscale"] = f"{self.autoscale[0]}:{self.autoscale[1]}"
        if self.api_key_env:
            out["api_key_env"] = self.api_key_env
        default = ServerConfig()
        for name in CONFIG_FIELDS:
            value = getattr(self.config, name)
            if value != getattr(default, name):
                out[name] = value
        return out


def _as(name: str, kind: Any, value: Any) -> Any:
    """``value`` as the field's type (``kind``: the dataclass's annotation, a string here)."""
    kind = str(kind)
    if value is None:
        return None
    try:
        if kind.startswith("bool"):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind.startswith("float"):
            return float(value)
    except ValueError as e:
        raise InputError(
            f"{name}={value!r} is not a {kind.split(' ')[0]}", field=name, reason="has the wrong type"
        ) from e
    return str(value)


def replica_count(spec: RaySpec, cluster_cpus: float) -> int:
    """Replicas of a fixed-size deployment: ``spec.replicas``, else as many of ``replica_cpus`` as
    ``cluster_cpus`` hold (at least 1). Ray Serve's proxy and controller ask for no CPU."""
    if spec.replicas is not None:
        return spec.replicas
    return max(1, int(cluster_cpus) // spec.replica_cpus)


def deployment_options(spec: RaySpec, cluster_cpus: float | None = None) -> dict[str, Any]:
    """The options of ``serve.deployment`` for ``spec`` (``cluster_cpus``: the cluster's CPUs, for
    a spec with neither ``replicas`` nor ``autoscale``; None counts as 1 replica)."""
    cfg = spec.config
    # a replica batches its concurrent requests: it needs a batch being collected while another
    # runs, so it takes up to two batches' worth at once (Ray's default, 5, would starve the
    # batcher); beyond that requests wait in Ray's router, and past max_queue Ray answers 503
    ongoing = 2 * cfg.batch_size
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        # the replica's CPUs are its threads (RayReplica makes the plan with threads = num_cpus)
        "ray_actor_options": {"num_cpus": spec.replica_cpus},
        "max_ongoing_requests": ongoing,
        "max_queued_requests": cfg.max_queue,
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        # the health probe is one text through the batcher: behind a full queue it may wait as long
        # as a request may
        "health_check_timeout_s": cfg.request_timeout_s + 5,
        # a replica being stopped gets no new requests and finishes those it has (then its queue)
        "graceful_shutdown_wait_loop_s": 1.0,
        "graceful_shutdown_timeout_s": cfg.request_timeout_s + 5,
        # no line per request, as plain ``serve`` (uvicorn's access log off): Ray's own costs
        # CPU on every request (docs/performance.md, "Serving on Ray")
        "logging_config": LOGGING,
    }
    if spec.autoscale is not None:
        lo, hi = spec.autoscale
        options["autoscaling_config"] = {
            "min_replicas": lo,
            "max_replicas": hi,
            "initial_replicas": max(lo, 1),
            # scale out once a replica holds half a batch on average: below that it is idle part
            # of the time; Ray's default (2) would add replicas a batching server does not need
            "target_ongoing_requests": max(2, cfg.batch_size // 2),
        }
    else:
        options["num_replicas"] = replica_count(spec, cluster_cpus or spec.replica_cpus)
    return options
