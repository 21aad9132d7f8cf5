"""What ``Embedder.load`` and ``Reranker.load`` share: the path resolved (an exported folder, or a
model exported once into the cache: ``dmeta_embed.cache.resolve_model``), the load plan made
(``runtime.plan.make_plan``), its engine started and what runs logged. Each class adds only its
task check and what follows the graph (a pooled vector, or logits made scores)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypedDict

from ..cache import resolve_model
from .cpu import CpuInfo
from .installed import Installed
from .plan import LoadPlan, Profile, Streams, make_plan, start
from .runner import Runner

log = logging.getLogger(__name__)


class LoadOptions(TypedDict, total=False):
    """The keyword arguments both ``load``s take beside ``variant``, ``provider`` and ``truncate``
    (``Embedder.load`` says what each does); typed once so the two cannot drift apart."""

    profile: Profile | str
    threads: int | None
    max_batch_tokens: int | None
    batch_size: int | None
    verify: bool
    guard: bool
    spin: bool
    streams: Streams | str | None
    cpu: CpuInfo | None
    engines: Installed | None
    revision: str | None
    cache_dir: str | Path | None


def load_plan(
    path: str | Path,
    variant: str = "auto",
    provider: str = "auto",
    *,
    profile: Profile | str = Profile.LIBRARY,
    threads: int | None = None,
    max_batch_tokens: int | None = None,
    batch_size: int | None = None,
    verify: bool = True,
    guard: bool = True,
    spin: bool = True,
    streams: Streams | str | None = None,
    cpu: CpuInfo | None = None,
    engines: Installed | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
) -> LoadPlan:
    """The plan for ``path`` (:class:`LoadOptions`): an exported folder as it is, anything else
    exported once into the export cache (``revision``, ``cache_dir``) and planned from there."""
    return make_plan(
        resolve_model(path, revision, cache_dir),
        variant,
        provider,
        profile,
        threads=threads,
        max_batch_tokens=max_batch_tokens,
        batch_size=batch_size,
        spin=spin,
        streams=streams,
        verify=verify,
        guard=guard,
        cpu=cpu,
        engines=engines,
    )


def start_logged(plan: LoadPlan, runner: Runner | None) -> tuple[LoadPlan, Runner]:
    """``plan`` started (:func:`~dmeta_embed.runtime.plan.start`, which falls back from a CUDA
    that does not start) unless a ``runner`` is given, with the plan that runs logged: its
    variant, provider and reason at INFO, each warning at WARNING."""
    if runner is None:
        plan, runner = start(plan)
    log.info("%s: %s on %s (%s)", plan.folder, plan.variant.value, plan.provider.value, plan.choice.reason)
    for warning in plan.warnings:
        log.warning("%s: %s", plan.folder, warning)
    return plan, runner
