"""What machine a result came from: CPU model, flags, cores, clock, memory, load, versions."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any

#: flags that decide which kernels the engines can use
FLAGS_OF_INTEREST = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)

PACKAGES = (
    "dmeta-embed",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "torch",
    "transformers",
    "tokenizers",
    "sentence-transformers",
    "optimum",
    "optimum-onnx",
    "optimum-intel",
    "openvino",
    "nncf",
    "fastembed",
    "numpy",
    "onnx",
)


RESULTS = Path(__file__).parent / "results"


def results_dir(model: str) -> Path:
    """Where results of ``model`` on this machine go: ``benchmarks/results/<model>/<cpu class>/``
    (the engines run different kernels per class, so figures are kept per class)."""
    from dmeta_embed.runtime.cpu import detect

    return RESULTS / model / detect().cpu_class.value


def cpuinfo() -> dict[str, str]:
    """The first CPU's fields of /proc/cpuinfo (empty where there is none): the runtime's reader."""
    from dmeta_embed.runtime.cpu import read_cpuinfo

    return read_cpuinfo() or {}


def _clock_ghz(info: dict[str, str]) -> tuple[float, str]:
    """The clock used for peak estimates: cpufreq's max, else the model name's "@ x.xGHz",
    else /proc/cpuinfo's MHz (under a hypervisor that is the TSC/base clock)."""
    f = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    try:
        return int(f.read_text()) / 1e6, "cpufreq max"
    except (OSError, ValueError):
        pass
    m = re.search(r"@\s*([\d.]+)\s*GHz", info.get("model name", ""))
    if m:
        return float(m.group(1)), "model name"
    try:
        return float(info["cpu MHz"]) / 1e3, "/proc/cpuinfo cpu MHz (base/TSC clock)"
    except (KeyError, ValueError):
        return 2.0, "unknown (assumed 2.0 GHz)"


def versions() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def load_snapshot() -> dict[str, Any]:
    """Machine load now: the ``uptime`` line and the 1/5/15-minute load averages."""
    try:
        line = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        line = ""
    try:
        avg = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        avg = []
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "uptime": line, "loadavg": avg}


def serve_environment() -> dict[str, Any]:
    """What a serving benchmark records of the machine it ran on: the CPUs the process may use,
    the CPU's name, the load average at the start, Python's version."""
    from dmeta_embed.runtime.cpu import available_cpus

    return {
        "cpus": available_cpus(),
        "cpu": cpuinfo().get("model name") or platform.processor() or platform.machine(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


def machine_info() -> dict[str, Any]:
    from dmeta_embed.runtime.cpu import available_cpus

    info = cpuinfo()
    flags = info.get("flags", "").split()
    ghz, clock_from = _clock_ghz(info)
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    hypervisor = "hypervisor" in flags
    return {
        "cpu_model": info.get("model name", platform.processor() or "unknown"),
        "cpu_family_model_stepping": [info.get("cpu family"), info.get("model"), info.get("stepping")],
        "logical_cpus": os.cpu_count(),
        "usable_cpus": available_cpus(),
        "clock_ghz": round(ghz, 3),
        "clock_from": clock_from,
        "flags": [f for f in FLAGS_OF_INTEREST if f in flags],
        "virtualized": hypervisor,
        "memory_gb": mem_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions(),
    }
