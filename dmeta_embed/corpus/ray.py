"""``embed-corpus --ray``: the corpus job's executor on Ray, its parts as a Ray Data
``map_batches`` over an actor pool.

Each actor holds one :class:`~dmeta_embed.corpus.worker.PartWorker` (one ``Embedder``, onnxruntime
threads = the actor's CPUs) and turns one part spec into one finished part file, exactly as the
in-process loop does; the driver plans, resumes and writes ``_SUCCESS``. Actors read their own rows,
so input, output and model folder must be paths every node sees (a shared filesystem).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from .._optional import require
from ..errors import DmetaEmbedError
from .errors import CorpusError
from .progress import Progress
from .source import Part
from .worker import JobSpec, PartWorker

ray = require("ray", "ray.data")

log = logging.getLogger(__name__)
_STATS = ("part", "rows", "tokens", "truncated", "seconds")
_FAILED = {"part": -1, "rows": 0, "tokens": 0, "truncated": 0, "seconds": 0.0}


class PartActor:
    """A Ray Data actor: one Embedder for its lifetime, one part per call."""

    def __init__(self, spec: dict[str, Any], threads: int) -> None:
        self.worker = PartWorker(JobSpec.from_dict(spec), threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = []
        for s in batch["part"]:
            try:
                rows.append({**self.worker.run(Part.from_dict(json.loads(str(s)))), "error": ""})
            except DmetaEmbedError as e:
                # returned as data: an exception crosses back to the driver only as traceback text
                rows.append({**_FAILED, "error": str(e)})
        return {k: np.array([r[k] for r in rows]) for k in (*_STATS, "error")}


def actor_plan(total_cpus: float, worker_cpus: int, workers: int | None, parts: int) -> tuple[int, int]:
    """(actors, CPUs each): actors take at most ``total - 1`` CPUs, because a Ray Data pipeline
    whose actors hold every CPU leaves none for its other tasks and stalls; never more actors than
    parts."""
    spare = max(int(total_cpus) - 1, 1)
    cpus = max(1, min(worker_cpus, spare))
    fit = max(1, spare // cpus)
    if workers is not None and workers > fit:
        log.warning(
            "--workers %d: only %d actor(s) of %d CPU(s) fit in %g CPUs (one left for reading)",
            workers,
            fit,
            cpus,
            total_cpus,
        )
    n = min(workers or fit, fit, max(parts, 1))
    return n, cpus


class RayExecutor:
    """The corpus job's parts on Ray Data actors (``corpus.executors.Executor``).

    ``address``: True for ``ray.init()`` (RAY_ADDRESS, a running local cluster, else a new local
    one), or an address (``"auto"``, ``"ray://head:10001"``, ``"local"``). An already initialised
    Ray is used as is and left running. ``workers``/``worker_cpus``: see :func:`actor_plan`."""

    name = "ray"

    def __init__(self, address: str | bool = True, workers: int | None = None, worker_cpus: int = 1) -> None:
        self.address, self.workers, self.worker_cpus = address, workers, worker_cpus

    def run(self, spec: JobSpec, parts: list[Part], progress: Progress | None = None) -> str:
        """Embed ``parts`` on the actor pool; returns a description of it."""
        return _run(spec, parts, self.address, self.workers, self.worker_cpus, progress)


def _run(
    spec: JobSpec,
    parts: list[Part],
    address: str | bool,
    workers: int | None,
    worker_cpus: int,
    progress: Progress | None,
) -> str:
    started = not ray.is_initialized()
    if started:
        ray.init(address=None if address is True else str(address), logging_level=logging.WARNING)
    try:
        total = ray.cluster_resources().get("CPU", 1)
        n, cpus = actor_plan(total, worker_cpus, workers, len(parts))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours counts rows; Ray's would count parts on a second line
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # keep stderr to our progress line
        ds = ray.data.from_items(
            [{"part": json.dumps(p.to_dict())} for p in parts], override_num_blocks=len(parts)
        )
        ds = ds.map_batches(
            PartActor,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=n),
            num_cpus=cpus,
            fn_constructor_kwargs={"spec": spec.to_dict(), "threads": cpus},
        )
        for row in ds.iter_rows():
            if row["error"]:
                raise CorpusError(str(row["error"]))
            if progress is not None:
                progress.add(int(row["rows"]), parts=1)
        return f"ray {ray.__version__}: {n} actor(s) x {cpus} CPU of {total:g}"
    finally:
        if started:
            ray.shutdown()
