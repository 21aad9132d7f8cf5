"""The server's inference workers: one engine and one thread each, handed batches by the batcher.

The batcher waits for a free worker, then merges what is queued into one batch and gives it to
that worker; with N workers up to N batches run at once. A free worker is taken lowest index
first, so at low load one engine stays hot in the caches. How many workers, on how many threads:
``runtime.workers`` (``--workers auto|N``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from ..runtime.engines import start_workers
from ..runtime.plan import LoadPlan
from ..runtime.runner import Runner
from ..runtime.workers import Workers
from .metrics import ModelMetrics

T = TypeVar("T")


@dataclass(eq=False)
class Worker:
    """One engine and the one thread that runs it."""

    index: int
    runner: Runner
    executor: ThreadPoolExecutor
    #: the batcher holds it (collecting a batch for it, or running one)
    taken: bool = False
    #: it has a batch (the ``dmeta_embed_worker_busy`` gauge)
    busy: bool = False


class WorkerPool:
    """``split.workers`` workers started from a model's plan, ``runner`` (its running engine) the
    first. Use from the event loop only, except :meth:`__init__` (starts engines: seconds, so a
    loading server builds it on a thread)."""

    def __init__(self, plan: LoadPlan, runner: Runner, split: Workers, metrics: ModelMetrics) -> None:
        self.split = split
        runners = start_workers(plan, runner, split)
        self.workers = [
            Worker(i, r, ThreadPoolExecutor(1, thread_name_prefix=f"dmeta-embed-infer-{i}"))
            for i, r in enumerate(runners)
        ]
        self._metrics = metrics
        for w in self.workers:
            metrics.worker_busy.labels(str(w.index)).set(0)
        self._freed: asyncio.Event | None = None

    @property
    def busy(self) -> bool:
        return any(w.busy for w in self.workers)

    async def acquire(self) -> Worker:
        """The free worker of lowest index, taken; waits while every worker is taken."""
        if self._freed is None:
            self._freed = asyncio.Event()
        while True:
            free = [w for w in self.workers if not w.taken]
            if free:
                free[0].taken = True
                return free[0]
            self._freed.clear()
            await self._freed.wait()

    def begin(self, worker: Worker) -> None:
        """``worker`` (taken) has a batch to run."""
        worker.busy = True
        self._metrics.worker_busy.labels(str(worker.index)).set(1)

    def release(self, worker: Worker) -> None:
        """``worker`` is done: free for the next batch."""
        worker.taken = worker.busy = False
        self._metrics.worker_busy.labels(str(worker.index)).set(0)
        if self._freed is not None:
            self._freed.set()

    async def call(self, worker: Worker, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on ``worker``'s thread."""
        return await asyncio.get_running_loop().run_in_executor(worker.executor, fn, *args)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for w in self.workers:
            await loop.run_in_executor(None, w.executor.shutdown)
