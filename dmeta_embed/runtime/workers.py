"""How many inferences a server runs at once, and on how many threads each: one rule, with the
machine's facts injected (:func:`workers_for`) or read here (:func:`machine_facts`).

Why a rule and not "always split": a request that finds the other workers idle still runs on its
own worker's threads only. Where one session on every core is already well used (a few cores),
splitting them halves a lone request's threads for little gain, so there the rule keeps one
worker. Beyond that, short queries stop scaling with threads long before a large machine's core
count, and one session spanning two NUMA nodes pays for remote memory on every operator: there
several workers of at least :data:`TARGET_THREADS` threads each, at least one per node, serve
more requests at once. Figures for this machine: docs/performance.md, "Serving: workers".
Standard library only.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .cpu import affinity, available_cpus, cgroup_quota

if TYPE_CHECKING:
    from .plan import LoadPlan

NODES = Path("/sys/devices/system/node")
#: at most this many usable cores: one worker on all of them (a lone request keeps every core)
SINGLE_UP_TO = 4
#: threads each worker gets once there are several: short queries gain little beyond this
TARGET_THREADS = 8
#: most onnxruntime sessions: each holds its own copy of the weights (and its prepacked kernels)
MAX_SESSIONS = 8
#: most OpenVINO streams: streams share one compiled model, so memory does not bound them
MAX_STREAMS = 16


class Workers(NamedTuple):
    """How the server's inference is split: ``workers`` at once, ``threads`` each."""

    workers: int
    threads: int


def usable_cores(cpus: int, quota: float | None) -> int:
    """Cores a process may keep busy: its CPUs (affinity), capped by a cgroup quota rounded down
    (a thread beyond a fractional quota only gets the process throttled); at least 1."""
    cap = cpus if quota is None else min(cpus, math.floor(quota))
    return max(1, cap)


def workers_for(
    cpus: int, numa_nodes: int = 1, quota: float | None = None, engine: str = "onnxruntime"
) -> Workers:
    """The ``auto`` rule: how many inferences run at once on a machine with ``cpus`` usable CPUs
    (affinity, ``runtime.cpu.available_cpus``), ``numa_nodes`` memory nodes and a cgroup CPU
    ``quota`` in cores (None: none), for ``engine`` (``onnxruntime``, ``openvino`` or ``cuda``).

    - ``cuda``: one worker (the GPU runs one batch at a time; the batcher already fills it);
    - at most :data:`SINGLE_UP_TO` usable cores: one worker on all of them;
    - else ``usable // TARGET_THREADS`` workers, at least one per NUMA node (when each node
      has more than :data:`SINGLE_UP_TO` cores), at most :data:`MAX_SESSIONS` onnxruntime
      sessions or :data:`MAX_STREAMS` OpenVINO streams; the cores shared out evenly."""
    cores = usable_cores(cpus, quota)
    if engine == "cuda" or cores <= SINGLE_UP_TO:
        return Workers(1, cores)
    nodes = max(1, numa_nodes)
    per_node = nodes if cores // nodes > SINGLE_UP_TO else 1
    most = MAX_STREAMS if engine == "openvino" else MAX_SESSIONS
    n = min(max(per_node, cores // TARGET_THREADS), most)
    return Workers(n, cores // n)


def numa_nodes(root: Path = NODES, cpus: frozenset[int] | None = None) -> int:
    """Memory nodes with CPUs (``node0``, ``node1``, ... under ``root``); 1 when unreadable.
    ``cpus``: count only the nodes holding one of these (the process's affinity): a server pinned
    with ``taskset`` to one node of a two-node machine spans one node, not two."""
    try:
        nodes = [p for p in root.iterdir() if re.fullmatch(r"node\d+", p.name)]
    except OSError:
        return 1
    return max(1, sum(1 for p in nodes if _has_cpus(p, cpus)))


def parse_cpulist(text: str) -> frozenset[int]:
    """The CPUs of a kernel cpulist such as ``0-7,16-23`` or ``0,2,4`` (empty: none)."""
    out: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return frozenset(out)


def _has_cpus(node: Path, cpus: frozenset[int] | None) -> bool:
    try:
        held = parse_cpulist((node / "cpulist").read_text())
    except (OSError, ValueError):
        return True  # no cpulist to read: count the node
    return bool(held if cpus is None else held & cpus)


def machine_facts() -> tuple[int, int, float | None]:
    """This machine's ``(cpus, numa_nodes, quota)`` for :func:`workers_for`, as this process sees
    it: its affinity's CPUs and the nodes they lie on."""
    return available_cpus(), numa_nodes(cpus=affinity()), cgroup_quota()


def resolve_workers(asked: int | None, engine: str, threads: int | None = None) -> Workers:
    """The server's split: ``asked`` workers (None: :func:`workers_for` on this machine), sharing
    ``threads`` (None: every usable core; when given, the quota is the caller's business)."""
    cpus, nodes, quota = machine_facts()
    if threads is not None:
        cpus, quota = threads, None
    if asked is None:
        return workers_for(cpus, nodes, quota, engine)
    return Workers(asked, max(1, usable_cores(cpus, quota) // asked))


def split_for(plan: LoadPlan, asked: int | None) -> Workers:
    """How a server shares ``plan`` among its workers: ``asked`` (None: ``auto``), with the
    threads the plan was asked for (None: the machine's cores). One worker keeps the plan's own
    threads: the server runs exactly as it did before workers existed. OpenVINO's streams share
    the plan's threads."""
    engine = "cuda" if plan.provider.value == "cuda" else plan.engine
    split = resolve_workers(asked, engine, plan.request.threads)
    if split.workers == 1:
        return Workers(1, plan.threads)
    if engine == "openvino":
        return Workers(split.workers, max(1, plan.threads // split.workers))
    return split
