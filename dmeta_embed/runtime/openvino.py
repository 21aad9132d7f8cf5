"""The int8-ov and bf16 variants on OpenVINO's own runtime: the ``openvino`` package beside
onnxruntime.

OpenVINO reads our ONNX file directly (``Core.compile_model``), so one environment holds every
CPU variant: onnxruntime runs fp32/int8, OpenVINO runs int8-ov and bf16 (the fp32 file compiled
with ``INFERENCE_PRECISION_HINT=bf16``, the manifest's ``engine_properties``). The other route, onnxruntime's
plugin execution provider (``onnxruntime-ep-openvino``), offers no device on non-Intel CPUs and
ships a second copy of OpenVINO; why this route was chosen: docs/performance.md, "OpenVINO".

``openvino`` is imported when an :class:`OpenVINORunner` is built, never by ``import
dmeta_embed.runtime``: the base runtime needs only numpy, tokenizers and onnxruntime.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..manifest import Provider
from .cpu import available_cpus
from .runner import Feed, feed, feed_names

#: environment variable naming OpenVINO's compiled-model cache folder ("" turns the cache off)
CACHE_ENV = "DMETA_EMBED_OPENVINO_CACHE"


def default_cache_dir() -> Path | None:
    """Where compiled int8-ov models are cached: ``$DMETA_EMBED_OPENVINO_CACHE``, else
    ``$XDG_CACHE_HOME/dmeta-embed/openvino`` (``~/.cache/...``); None when the variable is empty.
    A restarted process then imports the compiled model instead of compiling it again
    (docs/performance.md, "OpenVINO"); OpenVINO keys each entry by model, properties and version."""
    if CACHE_ENV in os.environ:
        return Path(os.environ[CACHE_ENV]) if os.environ[CACHE_ENV] else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dmeta-embed" / "openvino"


def compile_config(
    properties: dict[str, str],
    threads: int | None,
    cache_dir: str | Path | None = None,
    throughput: bool = False,
    streams: int | None = None,
    cpu_pinning: bool = True,
) -> dict[str, Any]:
    """The CPU plugin's configuration: the variant's validated ``properties`` (the manifest's
    ``engine_properties``, e.g. the inference precision), latency mode (one stream on all
    ``threads``) or throughput mode (OpenVINO splits ``threads`` into streams that run batches
    side by side; ``streams``: exactly that many, else OpenVINO's choice), and the
    compiled-model cache folder when one is given. ``cpu_pinning`` False turns the plugin's
    thread pinning off (``ENABLE_CPU_PINNING``); True leaves it to OpenVINO, which pins on Linux
    (the plan decides: ``LoadPlan.cpu_pinning``)."""
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "THROUGHPUT" if throughput or streams else "LATENCY",
        "INFERENCE_NUM_THREADS": threads or available_cpus(),
    }
    if streams:
        config["NUM_STREAMS"] = streams
    config.update(properties)
    if not cpu_pinning:
        # each process would pin its threads to the first CPUs of its mask, the same ones as
        # its neighbours': docs/performance.md, "Serving on Ray"
        config["ENABLE_CPU_PINNING"] = False
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    return config


def _copy_out(request: Any, output: Any) -> np.ndarray:
    """``request``'s ``output`` (a port or its name) as float32: a copy, as the request reuses its
    output buffer at the next call."""
    return np.array(request.get_tensor(output).data, dtype=np.float32)


class _Request:
    """:meth:`run` on one infer request, under a lock: what a compiled model's own request
    (:class:`OpenVINORunner`) and each of its workers' (:class:`OpenVINOLane`) share."""

    provider = Provider.OPENVINO
    _request: Any
    _names: tuple[str, ...]
    _output: Any
    _lock: threading.Lock

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        with self._lock:
            self._request.infer(feed(self._names, (input_ids, attention_mask, token_type_ids)))
            return _copy_out(self._request, self._output)


class OpenVINORunner(_Request):
    """A graph compiled by OpenVINO's CPU plugin: (input_ids, attention_mask) → [B, dim], the same
    ``run`` call as :class:`~dmeta_embed.runtime.session.OnnxRuntimeRunner`.

    ``properties``: the CPU plugin properties the variant was validated with. ``cache_dir``:
    OpenVINO's compiled-model cache (a restarted process imports instead of compiling).
    ``throughput``: compile for bulk work: :meth:`run_many` keeps one batch in flight per stream,
    more tokens/s on large calls, while a single :meth:`run` gets one stream's threads only (about
    twice the latency of one text).
    ``bulk``: stay in latency mode for :meth:`run` and small calls, and hand a :meth:`run_many`
    call of at least :attr:`BULK_ROUNDS` batches per stream to a throughput-mode twin, compiled
    the first time such a call comes (it holds its own copy of the compiled weights). What each
    mode gains and costs: docs/performance.md, "OpenVINO: one environment, bf16, shapes, streams".
    ``cpu_pinning``: False turns the plugin's thread pinning off (:func:`compile_config`).
    """

    #: a :meth:`run_many` call goes to the throughput twin only with at least this many batches
    #: per stream: with fewer, one stream idles while the other runs the last batch on half the
    #: threads, slower than latency mode (docs/performance.md, "OpenVINO")
    BULK_ROUNDS = 2

    def __init__(
        self,
        model: str | Path,
        threads: int | None = None,
        properties: dict[str, str] | None = None,
        *,
        inputs: tuple[str, ...] | None = None,
        output: str | None = None,
        cache_dir: str | Path | None = None,
        throughput: bool = False,
        bulk: bool = False,
        streams: int | None = None,
        cpu_pinning: bool = True,
    ) -> None:
        ov = require("openvino")
        if cache_dir is not None:
            try:
                Path(cache_dir).mkdir(parents=True, exist_ok=True)
            except OSError:  # read-only home, say: compile every time rather than fail
                cache_dir = None
        self.config = compile_config(properties or {}, threads, cache_dir, throughput, streams, cpu_pinning)
        #: streams asked for (None: OpenVINO's choice for the mode): :meth:`lanes` runs that many
        self.streams = streams
        self.compiled = ov.Core().compile_model(str(model), "CPU", self.config)
        self._names = feed_names([next(iter(i.get_names())) for i in self.compiled.inputs], inputs)
        output = output or next(iter(self.compiled.output(0).get_names()))
        self._output = self.compiled.output(output)
        self._output_name = output
        self._request = self.compiled.create_infer_request()
        #: batches in flight in :meth:`run_many` (1 in latency mode: nothing to overlap)
        self.in_flight = (
            int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) if throughput else 1
        )
        self._queue = ov.AsyncInferQueue(self.compiled, self.in_flight) if self.in_flight > 1 else None
        # calls from several threads (an executor) take turns
        self._lock = threading.Lock()
        # the throughput-mode twin for large run_many calls (``bulk``): built on first need
        self._twin_args = (model, threads, properties, inputs, output, cache_dir, cpu_pinning)
        self._bulk = bulk and not throughput
        self._twin: OpenVINORunner | None = None
        self._twin_lock = threading.Lock()

    def lanes(self, n: int) -> list[OpenVINOLane]:
        """``n`` runners on this compiled model, each with its own infer request: ``n`` threads
        (a server's workers) then run one batch each at once, in the model's streams (compile
        with ``streams=n``), sharing its weights."""
        return [OpenVINOLane(self) for _ in range(n)]

    def run_many(self, batches: Iterable[Feed], count: int | None = None) -> list[np.ndarray]:
        """Each ``(input_ids, attention_mask[, token_type_ids])`` batch's output, in order. In throughput mode up to
        :attr:`in_flight` batches run at once (``batches`` is read as requests free up, so a
        generator is never padded ahead); the same kernels as :meth:`run`, so the same vectors.
        ``count``: how many batches ``batches`` holds; with ``bulk``, enough of them go to the
        throughput twin."""
        twin = self._bulk_twin(count)
        if twin is not None:
            return twin.run_many(batches)
        if self._queue is None:
            return [self.run(*batch) for batch in batches]
        results: dict[int, np.ndarray] = {}
        output = self._output_name

        # the callback holds no OpenVINO object and not ``self``: the queue keeps it in C++, where
        # Python's cycle collector cannot see it, so runner → queue → callback → runner kept the
        # compiled model alive for the process's life (about 860 MB for a base-size model in bf16);
        # and the callback may be freed on an executor thread, where dropping the last hold on the
        # compiled model (an output port keeps it) joins that thread from itself: an abort
        def done(request: Any, i: int) -> None:
            results[i] = _copy_out(request, output)

        with self._lock:
            self._queue.set_callback(done)
            n = 0
            for batch in batches:
                self._queue.start_async(feed(self._names, batch), n)
                n += 1
            self._queue.wait_all()
        return [results[i] for i in range(n)]

    @classmethod
    def twin_takes(cls, count: int, in_flight: int) -> bool:
        """Whether a :meth:`run_many` call of ``count`` batches goes to a throughput-mode twin of
        ``in_flight`` streams (``bulk``; the export times int8-ov and bf16 by the same rule)."""
        return in_flight >= 2 and count >= cls.BULK_ROUNDS * in_flight

    def _bulk_twin(self, count: int | None) -> OpenVINORunner | None:
        """The throughput-mode twin when a call of ``count`` batches should run in streams."""
        if not self._bulk or count is None or not self.twin_takes(count, 2):  # 2: the fewest streams
            return None
        with self._twin_lock:
            if self._twin is None:
                model, threads, properties, inputs, output, cache_dir, cpu_pinning = self._twin_args
                twin = OpenVINORunner(
                    model,
                    threads,
                    properties,
                    inputs=inputs,
                    output=output,
                    cache_dir=cache_dir,
                    throughput=True,
                    cpu_pinning=cpu_pinning,
                )
                if twin.in_flight < 2:  # one stream (a single core): nothing to overlap
                    self._bulk = False
                    return None
                self._twin = twin
        twin = self._twin
        return twin if self.twin_takes(count, twin.in_flight) else None


class OpenVINOLane(_Request):
    """One infer request of an :class:`OpenVINORunner`'s compiled model: a server worker's runner
    (:meth:`OpenVINORunner.lanes`). The stream that runs it is OpenVINO's choice."""

    def __init__(self, owner: OpenVINORunner) -> None:
        #: the compiled model: ``owner.lanes`` gives more requests on it
        self.owner = owner
        self._names, self._output = owner._names, owner._output
        self._request = owner.compiled.create_infer_request()
        self._lock = threading.Lock()  # one worker thread uses a lane; the lock keeps others safe

    def run_many(self, batches: Iterable[Feed], count: int | None = None) -> list[np.ndarray]:
        """One batch after another on this lane's request (the other lanes run other workers')."""
        return [self.run(*batch) for batch in batches]
