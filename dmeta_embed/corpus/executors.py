"""Where a corpus job's pending parts are embedded: one protocol, two executors.

:class:`InProcess` runs them one after another with one Embedder in this process;
``corpus.ray.RayExecutor`` spreads them over Ray Data actors. Both run the same
:class:`~dmeta_embed.corpus.worker.PartWorker`, so their parts are the same bytes.
"""

from __future__ import annotations

from typing import Protocol

from .progress import Progress
from .source import Part
from .worker import JobSpec, PartWorker


class Executor(Protocol):
    """Embeds and writes parts; the job plans, resumes and writes ``_SUCCESS`` around it."""

    #: what ``_SUCCESS`` records as the engine when no part was left to embed
    name: str

    def run(self, spec: JobSpec, parts: list[Part], progress: Progress) -> str:
        """Embed and write every part in ``parts``, adding rows and parts to ``progress``;
        return a description of where they ran (``_SUCCESS``'s ``engine``)."""
        ...


class InProcess:
    """Every part in this process, one after another, with one Embedder on ``threads`` threads.
    The Embedder is loaded here, so a folder that cannot be loaded fails before any output."""

    name = "in-process"

    def __init__(self, spec: JobSpec, threads: int | None = None) -> None:
        self.worker = PartWorker(spec, threads=threads)

    def run(self, spec: JobSpec, parts: list[Part], progress: Progress) -> str:
        for part in parts:
            self.worker.run(part, on_rows=progress.add)
            progress.add(parts=1)
        return self.name
