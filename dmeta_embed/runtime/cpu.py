"""This CPU's class, read once from its flags: decides how (and whether) the int8 variant runs.

Our int8 files are dynamic quantization: u8 activations × s8 weights, per channel, int32
accumulation. onnxruntime computes that exactly where the CPU has int8 dot-product units (AMX-int8,
AVX512-VNNI, AVX-VNNI; arm64's sdot/udot or widening multiplies). On x86 without VNNI its u8×s8
kernels use ``pmaddubsw``, whose int16 pair sums saturate (255·127·2 > 32767), so the same file
computes a different function there. Its u8×u8 kernels widen to int16 first and never saturate,
so on those CPUs the runtime shifts the s8 weights to u8 with zero point 128 at load
(:mod:`dmeta_embed.runtime.int8`): the integers, and so the results, are the exact ones.
Standard library only.
"""

from __future__ import annotations

import functools
import math
import os
import platform
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

CPUINFO = "/proc/cpuinfo"
ARM = frozenset({"aarch64", "arm64", "armv8l"})
X86 = frozenset({"x86_64", "amd64", "x64", "i386", "i686", "x86"})
#: flags worth naming when explaining a choice (the full line has 100+ entries)
SIMD = (
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


class CpuClass(str, Enum):
    """What the CPU offers the engines, coarsest first: each class runs different int8/bf16 kernels."""

    #: Intel Sapphire Rapids and newer: AMX int8/bf16 tiles (+ AVX512-VNNI)
    AMX = "amx"
    #: AVX-512 with VNNI (Intel Cascade Lake / Ice Lake, AMD Zen 4 / Zen 5)
    AVX512_VNNI = "avx512_vnni"
    #: AVX2 with AVX-VNNI (Intel Alder Lake and newer client cores, Sierra Forest)
    AVX_VNNI = "avx_vnni"
    #: AVX-512 without VNNI (Intel Skylake-SP)
    AVX512 = "avx512"
    #: AVX2 only (AMD Zen 1-3, Intel Haswell to Coffee Lake)
    AVX2 = "avx2"
    #: older x86 (SSE4 / AVX only)
    X86 = "x86"
    ARM64 = "arm64"
    #: flags unreadable, or an architecture not measured
    UNKNOWN = "unknown"


#: classes on which onnxruntime's u8×s8 kernels accumulate in int32 (the s8 file runs as exported)
S8_EXACT = frozenset({CpuClass.AMX, CpuClass.AVX512_VNNI, CpuClass.AVX_VNNI, CpuClass.ARM64})
#: x86 classes whose u8×s8 kernels saturate: the runtime loads the int8 file with u8 weights
U8_SHIFT = frozenset({CpuClass.AVX512, CpuClass.AVX2, CpuClass.X86})


@dataclass(frozen=True)
class CpuInfo:
    """The facts about this CPU that decide kernels: class, vendor, model name, named SIMD flags."""

    cpu_class: CpuClass
    vendor: str = ""
    model: str = ""
    arch: str = ""
    flags: frozenset[str] = frozenset()

    @property
    def int8_weights(self) -> str | None:
        """How the int8 file's weights must be fed for exact results here: ``"s8"`` as exported,
        ``"u8"`` shifted at load, or None (class unknown: int8 is not trusted)."""
        if self.cpu_class in S8_EXACT:
            return "s8"
        if self.cpu_class in U8_SHIFT:
            return "u8"
        return None

    @property
    def bf16(self) -> bool:
        """Native bf16 arithmetic (AMX-bf16 or AVX512-BF16); elsewhere bf16 is emulated and slow."""
        return bool({"amx_bf16", "avx512_bf16"} & self.flags)

    def named_flags(self) -> str:
        return " ".join(f for f in SIMD if f in self.flags) or "none of " + "/".join(SIMD[:3])

    def describe(self) -> str:
        """One line: ``amx (Intel Xeon Platinum 8480+; flags avx2 avx512f ...)``."""
        who = " ".join(x for x in (self.vendor, self.model) if x) or self.arch or "unknown CPU"
        return f"{self.cpu_class.value} ({who}; {self.named_flags()})"

    def to_dict(self) -> dict[str, str]:
        """What the manifest records about the CPU a variant was validated on."""
        return {
            "cpu_class": self.cpu_class.value,
            "vendor": self.vendor,
            "model": self.model,
            "arch": self.arch,
            "int8_weights": self.int8_weights or "untrusted",
        }


def classify(flags: frozenset[str] | set[str] | None, machine: str) -> CpuClass:
    """The class of a CPU with these flags on this architecture (``platform.machine()``)."""
    arch = machine.lower()
    if arch in ARM:
        return CpuClass.ARM64
    if arch not in X86 or flags is None:
        return CpuClass.UNKNOWN
    if {"amx_int8", "amx_tile"} <= flags:
        return CpuClass.AMX
    if "avx512_vnni" in flags:
        return CpuClass.AVX512_VNNI
    if "avx_vnni" in flags:
        return CpuClass.AVX_VNNI
    if "avx512bw" in flags:
        return CpuClass.AVX512
    if "avx2" in flags:
        return CpuClass.AVX2
    return CpuClass.X86


def read_cpuinfo(path: str = CPUINFO) -> dict[str, str] | None:
    """The first processor block of ``path`` (Linux) as key → value; None when unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            block: dict[str, str] = {}
            for line in f:
                if not line.strip():
                    if block:
                        break
                    continue
                key, sep, value = line.partition(":")
                if sep:
                    block.setdefault(key.strip(), value.strip())
            return block or None
    except OSError:
        return None


def cpu_info(cpuinfo: dict[str, str] | None, machine: str) -> CpuInfo:
    """A :class:`CpuInfo` from a parsed cpuinfo block (x86 ``flags``, arm64 ``Features``)."""
    info = cpuinfo or {}
    raw = info.get("flags", info.get("Features"))
    flags = frozenset(raw.split()) if raw is not None else None
    return CpuInfo(
        cpu_class=classify(flags, machine),
        vendor=info.get("vendor_id", info.get("CPU implementer", "")),
        model=info.get("model name", info.get("CPU part", "")),
        arch=machine,
        flags=flags or frozenset(),
    )


@functools.lru_cache(maxsize=1)
def detect() -> CpuInfo:
    """This machine's CPU (read once per process)."""
    return cpu_info(read_cpuinfo(), platform.machine())


def affinity() -> frozenset[int] | None:
    """The CPUs this process may run on (None where the platform does not say)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def available_cpus() -> int:
    """CPUs this process may really use: affinity mask and cgroup quota, not ``os.cpu_count()``."""
    mask = affinity()
    n = len(mask) if mask is not None else os.cpu_count() or 1
    quota = cgroup_quota()
    return max(1, min(n, math.ceil(quota)) if quota else n)


def owns_cpus(threads: int, affinity: int | None) -> bool:
    """Whether a process running ``threads`` inference threads has the CPUs it may run on
    (``affinity``: its affinity mask's size; None where the platform does not say) to itself:
    its threads cover every one of them (a ``taskset``, a container's cpuset, the whole machine).
    Where it may run on more CPUs than it has threads (a Ray replica of 1 CPU on a larger host, a
    container held by a CPU quota only), others likely run beside it on the same CPUs, and an
    engine that pins its threads pins each such process to the same first CPUs of the mask:
    OpenVINO's CPU plugin does (docs/performance.md, "Serving on Ray"). Unknown affinity: True,
    the engine's own default."""
    return affinity is None or threads >= affinity


def cgroup_quota() -> float | None:
    """The cgroup's CPU quota in cores (``1.5`` for 150000/100000), None when there is none."""
    try:  # cgroup v2: "max 100000" or "150000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        p = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if q > 0 and p > 0:
            return q / p
    except (OSError, ValueError):
        pass
    return None
