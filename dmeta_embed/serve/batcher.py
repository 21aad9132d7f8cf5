"""Dynamic batching: requests from many clients → token-budget batches on the inference workers.

One batcher per hosted model (an embedder, a reranker): each request is prepared once by the
runtime (``Embedder.pipeline.prepare``: prompt, tokens, truncation; a reranker's pairs;
before it is queued, so its size is known and usage can be counted). One batcher waits for a free
worker (``serve.pool``; one by default on a few cores), merges queued requests into one batch,
and has that worker run the runtime's length-sorted batching over it on its own thread (the event
loop never runs inference); each request gets the rows of its own slice, in its own order. With
N workers up to N batches run at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from ..errors import DmetaEmbedError
from ..runtime.plan import LoadPlan
from ..runtime.runner import Runner
from ..runtime.tokenize import Tokenized
from ..runtime.workers import split_for
from .config import ServerConfig
from .metrics import ModelMetrics
from .pool import Worker, WorkerPool

log = logging.getLogger(__name__)


class Overloaded(DmetaEmbedError):
    """The queue is full or the server is stopping: the client should retry later."""


@dataclass(frozen=True)
class Engine:
    """What a batcher runs, whatever the model: its plan and running engine (the first worker's),
    how merged requests run on one worker's engine, and how that engine is warmed up.
    ``serve.models`` makes one for an ``Embedder`` and one for a ``Reranker``."""

    plan: LoadPlan
    runner: Runner
    #: (merged requests' tokens, a worker's runner, batch_size, max_batch_tokens) → one row per
    #: input, in input order: the runtime's length-sorted batching
    run: Callable[[Tokenized, Runner, int, int], np.ndarray]
    #: a few shapes through a worker's engine: first-use costs off the first clients' latency
    warm: Callable[[Runner], None]


@dataclass(eq=False)
class _Job:
    tok: Tokenized
    longest: int
    future: asyncio.Future[np.ndarray]
    enqueued: float  # loop time

    @property
    def size(self) -> int:
        return len(self.tok.ids)


def merge(toks: list[Tokenized]) -> Tokenized:
    """Concatenate tokenised requests; request k owns rows [offset_k, offset_k + len_k). Every
    per-row field is concatenated (a pair's token types too), whatever fields ``Tokenized`` has."""
    first = toks[0]
    values: dict[str, object] = {}
    for f in fields(Tokenized):
        value = getattr(first, f.name)
        if f.name == "truncated":  # indices into one request: meaningless once merged
            values[f.name] = []
        elif isinstance(value, np.ndarray):
            values[f.name] = np.concatenate([getattr(t, f.name) for t in toks])
        elif isinstance(value, list):
            values[f.name] = [row for t in toks for row in getattr(t, f.name)]
        else:  # an optional per-row field none of them has (None)
            values[f.name] = value
    return Tokenized(**values)  # type: ignore[arg-type]


class Batcher:
    """One queue per model, feeding its inference workers. Use from the event loop only."""

    def __init__(self, engine: Engine, cfg: ServerConfig, metrics: ModelMetrics) -> None:
        self._engine = engine
        #: padded tokens per inference batch (the runtime's default for the provider unless configured)
        self.max_batch_tokens = cfg.max_batch_tokens or engine.plan.max_batch_tokens
        self._batch_size = cfg.batch_size
        self._max_wait = cfg.max_wait_ms / 1000
        self._max_queue = cfg.max_queue
        self._metrics = metrics
        self._pending: deque[_Job] = deque()
        self._queued = 0  # inputs in _pending
        metrics.queue_depth.set_function(lambda: self._queued)  # read at scrape time
        self._closing = False
        #: requests merged into the last batch: >1 means clients are concurrent, and waiting for
        #: company pays; a lone client's request is never held back
        self._last_merged = 1
        # one worker on a few cores: onnxruntime already uses every core for one batch, and a
        # single worker keeps batches whole instead of splitting the cores between two half-full
        # ones; on more cores several workers (runtime.workers)
        self.pool = WorkerPool(engine.plan, engine.runner, split_for(engine.plan, cfg.workers), metrics)
        self._running: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = False
        #: why warm-up failed, once it has (the model cannot run here: a Ray replica is replaced)
        self.warm_up_error: Exception | None = None
        self._warmed: asyncio.Event | None = None

    def start(self, warmup: Callable[[], None]) -> None:
        """Warm up on the worker threads (``warmup`` on the first, which runs the model's own
        engine), then take jobs; jobs submitted meanwhile wait in the queue."""
        self._wake = asyncio.Event()
        self._warmed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._work(warmup), name="dmeta-embed-batcher")

    async def warmed(self) -> None:
        """Return once warm-up has run; raise its error if it failed."""
        assert self._warmed is not None, "Batcher.start() was not called"
        await self._warmed.wait()
        if self.warm_up_error is not None:
            raise self.warm_up_error

    def submit(self, tok: Tokenized) -> asyncio.Future[np.ndarray]:
        """Queue one request's tokens; the future gets its rows in input order (``(n, dim)``
        vectors, or a reranker's ``(n, num_labels)`` logits)."""
        assert self._wake is not None, "Batcher.start() was not called"
        if self._closing:
            raise Overloaded("the server is shutting down")
        n = len(tok.ids)
        # an empty queue always admits one request, so one larger than max_queue is not refused forever
        if self._queued and self._queued + n > self._max_queue:
            raise Overloaded(
                f"the queue is full ({self._queued} inputs waiting, max_queue={self._max_queue})"
            )
        loop = asyncio.get_running_loop()
        job = _Job(tok, int(tok.lengths.max()), loop.create_future(), loop.time())
        self._pending.append(job)
        self._queued += n
        job.future.add_done_callback(lambda f: self._forget(job) if f.cancelled() else None)
        self._wake.set()
        return job.future

    def _forget(self, job: _Job) -> None:
        """A request that gave up (timeout) frees its place in the queue at once."""
        try:
            self._pending.remove(job)
        except ValueError:  # already taken by the worker
            return
        self._queued -= job.size

    async def close(self, timeout: float) -> None:
        """Refuse new work, finish what is queued (at most ``timeout`` s), stop the worker thread."""
        self._closing = True
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while (self._pending or self.pool.busy) and loop.time() < end:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(Overloaded("the server stopped before this request ran"))
        await self.pool.close()

    async def _warm_up(self, warmup: Callable[[], None]) -> None:
        """``warmup`` on the first worker's thread (it runs the model's own engine), and the
        warm-up shapes through every worker's engine that is not that one, at once."""
        e, pool = self._engine, self.pool

        def first() -> None:
            warmup()
            if pool.workers[0].runner is not e.runner:
                e.warm(pool.workers[0].runner)

        steps = [pool.call(pool.workers[0], first)]
        steps += [pool.call(w, e.warm, w.runner) for w in pool.workers[1:]]
        await asyncio.gather(*steps)

    async def _work(self, warmup: Callable[[], None]) -> None:
        try:
            await self._warm_up(warmup)
            self.ready = True
            self._metrics.ready.set(1)
        except Exception as e:  # a model that fails warm-up stays "not ready"; requests still get an answer
            log.exception("warm-up failed; /ready will keep answering 503")
            self.warm_up_error = e
        assert self._warmed is not None
        self._warmed.set()
        while True:
            worker = await self.pool.acquire()
            try:
                # a batch is made only once a worker is free to run it: with one worker, the
                # next batch is merged while the last one ran (as before workers existed)
                jobs = await self._collect()
            except Exception:  # a bug here must not stop the batcher: later requests still get served
                log.exception("batcher step failed")
                jobs = []
            if not jobs:
                self.pool.release(worker)
                continue
            self.pool.begin(worker)
            task = asyncio.get_running_loop().create_task(self._run(worker, jobs))
            self._running.add(task)  # a reference, so the task is not collected while it runs
            task.add_done_callback(self._running.discard)

    def _pop(self) -> _Job:
        job = self._pending.popleft()
        self._queued -= job.size
        return job

    async def _collect(self) -> list[_Job]:
        """Take queued jobs up to the batch limits. While the last batch merged several requests,
        wait for more until the first job has waited ``max_wait`` (counted from when it was queued,
        so a request that already queued behind a busy worker waits no longer)."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while not self._pending:
            self._wake.clear()
            await self._wake.wait()
        jobs: list[_Job] = []
        n = longest = 0
        wait = self._max_wait if self._last_merged > 1 else 0.0
        deadline = self._pending[0].enqueued + wait
        while n < self._batch_size and n * longest < self.max_batch_tokens:
            if not self._pending:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                continue
            job = self._pending[0]
            if job.future.done():  # its request timed out: drop the work
                self._pop()
                continue
            wide = max(longest, job.longest)
            if jobs and (n + job.size > self._batch_size or (n + job.size) * wide > self.max_batch_tokens):
                break
            jobs.append(self._pop())
            n, longest = n + job.size, wide
        if jobs:
            self._last_merged = len(jobs)
        return jobs

    async def _run(self, worker: Worker, jobs: list[_Job]) -> None:
        try:
            await self._answer(worker, jobs)
        except Exception:  # a bug here must not keep the worker busy forever
            log.exception("batcher step failed")
        finally:
            self.pool.release(worker)

    async def _answer(self, worker: Worker, jobs: list[_Job]) -> None:
        try:
            out = await self.pool.call(worker, self._infer, worker.runner, [j.tok for j in jobs])
        except Exception as e:
            log.exception("inference failed for a batch of %d request(s)", len(jobs))
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(e)
            return
        offset = tokens = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(out[offset : offset + job.size])
            offset += job.size
            tokens += int(job.tok.lengths.sum())
        m = self._metrics
        m.batch_size.observe(offset)
        m.batch_requests.observe(len(jobs))
        m.batch_tokens.observe(tokens)
        m.inputs.inc(offset)
        m.tokens.inc(tokens)

    def _infer(self, runner: Runner, toks: list[Tokenized]) -> np.ndarray:
        # the runtime's batching sorts by length and keeps each batch's padding under 2×
        return self._engine.run(merge(toks), runner, self._batch_size, self.max_batch_tokens)
