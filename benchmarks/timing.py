"""The measuring primitives every benchmark script shares: percentiles of timings, resident and
peak memory, CPU time of a process. The harness (``benchmarks.harness``) and the investigations
(``benchmarks/investigations/``) use these, so a p99 or an RSS means the same thing everywhere.

Standard library and numpy only; Linux ``/proc`` where a figure needs it (None elsewhere).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def percentiles(ms: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99, mean, min, max (in the unit given, here always milliseconds) and the count."""
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("percentiles of no timings")
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "min": float(a.min()),
        "max": float(a.max()),
        "calls": int(a.size),
    }


def _status_kib(pid: int | None, field: str) -> int | None:
    where = Path("/proc") / (str(pid) if pid is not None else "self") / "status"
    try:
        for line in where.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def rss_mb(pid: int | None = None) -> float | None:
    """Current resident set size of ``pid`` (default: this process) in MiB, None without /proc."""
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else round(kib / 1024, 1)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time another process has used so far (its every thread)."""
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
