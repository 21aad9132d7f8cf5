"""The export's memory: its peak, per stage, and handing freed memory back between stages.

An export of a BERT-base holds a few copies of a 440 MB graph at a time (a graph, a session over
it, a candidate being quantized); what it frees between stages goes back to the allocator, which
keeps much of it unless asked to return it (glibc keeps freed chunks of large protobuf and numpy
buffers in its arenas). :func:`release` collects the cycles that hold engines (OpenVINO's infer
queue callbacks, the speed runs' closures) and trims the allocator, so the next stage starts from
what is really live. The export records its peak resident memory, per stage and in all, in the
manifest (figures: docs/performance.md, "Export time and memory").
"""

from __future__ import annotations

import ctypes
import gc
import resource
import sys
from functools import cache

MB = 1 << 20


@cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # by name: ctypes.util.find_library forks ldconfig, a copy of this process's page table
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release() -> None:
    """Free what nothing holds any more (reference cycles included) and return the allocator's
    free memory to the system where it can (glibc's ``malloc_trim``)."""
    gc.collect()
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is not None:
        trim(0)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _maxrss_mb(who: int) -> float:
    """``getrusage(who).ru_maxrss`` in MB (kilobytes on Linux, bytes on macOS)."""
    rss = resource.getrusage(who).ru_maxrss
    return rss / MB if sys.platform == "darwin" else rss / 1024


class Peaks:
    """Peak resident memory of this process per stage: :meth:`lap` closes a stage with the peak
    since the last lap (Linux: VmHWM, reset after each lap through ``/proc/self/clear_refs``;
    elsewhere the peak so far).

    Children are not added: the export starts none of its own, and the short-lived ones that
    libraries fork (ctypes' ``ldconfig``, CPU probes) report the parent's shared pages as their
    resident peak, which would count the export twice (``benchmarks/export_memory.py`` measures
    the whole process tree by PSS instead)."""

    def __init__(self) -> None:
        self.stages: dict[str, int] = {}
        self._resets = self._reset()

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux 4.0+)
            return True
        except OSError:
            return False

    def current_peak_mb(self) -> float:
        """This process's peak since the last lap (the peak so far where it cannot be reset)."""
        hwm = _status_kb("VmHWM") if self._resets else None
        return hwm / 1024 if hwm is not None else _maxrss_mb(resource.RUSAGE_SELF)

    def lap(self, name: str) -> int:
        """Close stage ``name``: its peak in MB (a stage seen twice keeps its higher peak)."""
        peak = round(self.current_peak_mb())
        self.stages[name] = max(self.stages.get(name, 0), peak)
        if self._resets:
            self._reset()
        return peak

    @property
    def peak(self) -> int:
        """The highest stage peak (this process's own peak where none was recorded)."""
        return max(self.stages.values(), default=0) or round(_maxrss_mb(resource.RUSAGE_SELF))
