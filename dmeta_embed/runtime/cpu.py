"""Which int8 units this CPU has, from its flags: decides whether ``auto`` may pick the int8 variant.

Our int8 files are dynamic quantization, u8 activations × s8 weights, not ``reduce_range``.
onnxruntime runs them exactly on AMX-int8, AVX512-VNNI and AVX-VNNI (int32 accumulation) and on
arm64 (sdot/udot or widening multiplies). On x86 without VNNI its u8×s8 kernels use
``pmaddubsw``, whose int16 intermediates can saturate, so the fidelity measured at export does
not carry over there. Standard library only.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Iterable

CPUINFO = "/proc/cpuinfo"
#: units on which onnxruntime's u8×s8 kernels accumulate in int32 (no int16 saturation)
FAST = frozenset({"amx", "avx512_vnni", "avx_vnni", "arm64"})
#: every value int8_units() can return
UNITS = FAST | {"none", "unknown"}
ARM = frozenset({"aarch64", "arm64", "armv8l"})
X86 = frozenset({"x86_64", "amd64", "x64", "i386", "i686", "x86"})
#: flags worth naming when explaining a choice (the full line has 100+ entries)
SIMD = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")


@functools.lru_cache(maxsize=8)
def cpu_flags(path: str = CPUINFO) -> frozenset[str] | None:
    """The CPU's feature flags from the first ``flags`` line of ``path`` (Linux), read once;
    None when there is no such file or line (macOS, Windows, arm64 Linux says ``Features``)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        return None
    return None


def int8_units(flags: Iterable[str] | None = None, machine: str | None = None) -> str:
    """``amx``, ``avx512_vnni``, ``avx_vnni``, ``arm64``, ``none`` (x86 without VNNI) or ``unknown``
    (flags unreadable, or an architecture we have not measured). ``flags`` and ``machine``
    default to this machine's (``cpu_flags()``, ``platform.machine()``)."""
    arch = (machine if machine is not None else platform.machine()).lower()
    if arch in ARM:
        return "arm64"
    if arch not in X86:
        return "unknown"
    known = cpu_flags() if flags is None else frozenset(flags)
    if known is None:
        return "unknown"
    if {"amx_int8", "amx_tile"} <= known:
        return "amx"
    if "avx512_vnni" in known:
        return "avx512_vnni"
    if "avx_vnni" in known:
        return "avx_vnni"
    return "none"


def int8_is_fast(units: str) -> bool:
    """Whether the int8 variant is both exact (as measured at export) and fast on ``units``."""
    return units in FAST


def why_not_int8(units: str, flags: Iterable[str] | None = None) -> str:
    """One clause for a log line saying why int8 is not trusted on ``units``."""
    if units == "none":
        have = cpu_flags() if flags is None else frozenset(flags)
        named = " ".join(f for f in SIMD if have and f in have) or "no AVX2"
        return f"this CPU has no VNNI/AMX int8 units (flags: {named})"
    if units == "unknown":
        machine = platform.machine() or "?"
        return f"this CPU's int8 units could not be detected (machine {machine}: no CPU flags, or not x86/arm64)"
    return f"int8 units: {units}"
