"""Starting a :class:`~dmeta_embed.runtime.plan.LoadPlan`'s engine: one small registry, engine name
→ factory, each importing its engine only when it is started (engines are found, not imported,
by :mod:`dmeta_embed.runtime.installed`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from enum import Enum
from typing import TYPE_CHECKING

from ..errors import MissingDependencyError, ModelLoadError, ProviderError
from ..manifest import sha256_file
from .runner import Runner
from .workers import Workers

if TYPE_CHECKING:
    from .openvino import OpenVINOLane, OpenVINORunner
    from .plan import LoadPlan


class Streams(str, Enum):
    """How an OpenVINO variant uses the cores (onnxruntime has one mode: every thread on a batch)."""

    #: one inference at a time on every thread
    LATENCY = "latency"
    #: OpenVINO splits the threads into streams that run batches side by side
    THROUGHPUT = "throughput"
    #: latency mode, plus a throughput-mode twin compiled at the first large call
    ADAPTIVE = "latency+throughput"


def _onnxruntime(plan: LoadPlan) -> Runner:
    from .session import OnnxRuntimeRunner

    spec = plan.manifest.variants[plan.variant.value]
    return OnnxRuntimeRunner(
        plan.model_file,
        plan.provider,
        plan.threads,
        plan.spin,
        inputs=plan.manifest.inputs,
        output=plan.manifest.output,
        int8_weights=plan.choice.int8_weights,
        expect_int8_tensors=spec.int8_tensors or None,
    )


def _openvino(plan: LoadPlan, streams: int | None = None) -> OpenVINORunner:
    """The plan's compiled model, in the plan's streams mode; or, given ``streams``, compiled
    with that many streams for a server's workers (``lanes``: one infer request each)."""
    from .openvino import OpenVINORunner

    return OpenVINORunner(
        plan.model_file,
        plan.threads,
        dict(plan.choice.engine_properties),
        inputs=plan.manifest.inputs,
        output=plan.manifest.output,
        cache_dir=plan.cache_dir,
        throughput=streams is None and plan.streams == Streams.THROUGHPUT,
        bulk=streams is None and plan.streams == Streams.ADAPTIVE,
        streams=streams,
        cpu_pinning=plan.cpu_pinning,
    )


#: engine name (``Provider.engine``) → what starts a plan on it
ENGINES: Mapping[str, Callable[[LoadPlan], Runner]] = {"onnxruntime": _onnxruntime, "openvino": _openvino}


def _openvino_lane(plan: LoadPlan, streams: int) -> OpenVINOLane:
    """The first of ``streams`` infer requests on one compiled model with that many streams
    (``lane.owner.lanes`` makes the others)."""
    return _openvino(plan, streams).lanes(1)[0]


def start_runner(plan: LoadPlan, streams: int | None = None) -> Runner:
    """The plan's engine, started: the file's checksum checked first (``plan.verify``); an
    engine's own load error becomes a ModelLoadError naming the file. ``streams`` (OpenVINO
    only): compile with that many streams and return the first one's runner (a server's
    workers: :func:`start_workers`)."""
    if plan.verify:
        expected = plan.manifest.variants[plan.variant.value].sha256
        digest = sha256_file(plan.model_file)
        if digest != expected:
            raise ModelLoadError(
                f"{plan.model_file}: checksum mismatch (file is corrupted or was "
                f"changed after export): {digest[:12]} != {expected[:12]}"
            )
    try:
        if streams is not None and plan.engine == "openvino":
            return _openvino_lane(plan, streams)
        return ENGINES[plan.engine](plan)
    except (ProviderError, MissingDependencyError):
        raise
    except Exception as e:  # onnxruntime and OpenVINO raise their own error types
        raise ModelLoadError(f"{plan.model_file}: {plan.engine} cannot load it ({e})") from e


def start_workers(plan: LoadPlan, runner: Runner, split: Workers) -> list[Runner]:
    """One runner per server worker (``split.workers`` of them), started from ``plan``, whose
    ``runner`` is already running. One worker: ``runner`` itself (the server as before).

    onnxruntime: one session per worker on ``split.threads`` threads, ``runner`` among them
    when it already has that many; each session holds its own copy of the weights (onnxruntime's
    Python API has no shared prepacked-weights container: docs/serving.md, "Workers").
    OpenVINO: one compiled model with a stream per worker on all the plan's threads, one infer
    request per worker (``runner`` the first, when it is already such a request: what
    ``serve.load_embedder`` starts); the streams share its weights. CUDA: one session per worker."""
    n = split.workers
    if n == 1:
        return [runner]
    if plan.engine == "openvino":
        from .openvino import OpenVINOLane

        ok = isinstance(runner, OpenVINOLane) and runner.owner.streams == n
        lane = runner if ok else _openvino_lane(plan, n)
        assert isinstance(lane, OpenVINOLane)
        return [lane, *lane.owner.lanes(n - 1)]
    same = replace(plan, threads=split.threads, verify=False)  # the file was checked at the first start
    first = [runner] if plan.threads == split.threads else []
    return first + [start_runner(same) for _ in range(n - len(first))]
