"""What ``Embedder.load`` and ``Reranker.load`` share: the path resolved (an exported folder, or a
model exported once into the cache: ``dmeta_embed.cache.resolve_model``), the load plan made
(``runtime.plan.make_plan``), its engine started and what runs logged. Each class adds only its
task check and what follows the graph (a pooled vector, or logits made scores)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from ..cache import resolve_model
from .cpu import CpuInfo
from .installed import Installed
from .plan import LoadPlan, Profile, Streams, make_plan, start
from .runner import Runner

if TYPE_CHECKING:
    from typing_extensions import Unpack  # Python 3.10 has no typing.Unpack; only mypy reads it

log = logging.getLogger(__name__)


class PlanOptions(TypedDict, total=False):
    """:func:`~dmeta_embed.runtime.plan.make_plan`'s keyword arguments that both ``load``s take
    (``Embedder.load`` says what each does)."""

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


class LoadOptions(PlanOptions, total=False):
    """The keyword arguments both ``load``s take beside ``variant``, ``provider`` and ``truncate``:
    typed once, so the two cannot drift apart (mypy checks each name and type at the call)."""

    #: a hub id's revision, and the export cache (``dmeta_embed.cache.resolve_model``)
    revision: str | None
    cache_dir: str | Path | None


def load_plan(
    path: str | Path,
    variant: str = "auto",
    provider: str = "auto",
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    **options: Unpack[PlanOptions],
) -> LoadPlan:
    """The plan for ``path``: an exported folder as it is, anything else exported once into the
    export cache (``revision``, ``cache_dir``) and planned from there with ``options``."""
    return make_plan(resolve_model(path, revision, cache_dir), variant, provider, **options)


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
