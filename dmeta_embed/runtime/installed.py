"""Which inference engines this process can use, found without importing any of them when it
can be helped (``dmeta-embed inspect`` and the load plan work with any one engine, or none)."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from .._optional import require
from ..manifest import Provider

#: onnxruntime's names of its CPU and CUDA execution providers
CPU = Provider.CPU.ort_name
CUDA = Provider.CUDA.ort_name


@dataclass(frozen=True)
class Installed:
    """Which optional engines this process can use: onnxruntime (the fp32/fp16/int8 variants'),
    its CUDA provider, and the ``openvino`` package (the int8-ov and bf16 variants' engine,
    installed beside onnxruntime or alone)."""

    cuda: bool = False
    openvino: bool = False
    onnxruntime: bool = True


@functools.cache
def ort() -> ModuleType:
    """onnxruntime, imported on first use: ``runtime.cpu`` and the load plan work without it (an
    OpenVINO-only install, say)."""
    return require("onnxruntime")


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` (the fp32/fp16/int8 variants' engine) can be imported; looked up only."""
    return _findable("onnxruntime")


def openvino_available() -> bool:
    """Whether the ``openvino`` package (the int8-ov and bf16 variants' engine) can be imported
    here; it is looked up, not imported."""
    return _findable("openvino")


def cuda_available() -> bool:
    """Whether onnxruntime offers its CUDA provider (imports onnxruntime, when it is installed).
    Listed is not started: onnxruntime-gpu lists CUDA also where no driver is present."""
    if not onnxruntime_available():
        return False
    return CUDA in ort().get_available_providers()


def installed() -> Installed:
    """The engines this process can use: onnxruntime (and its CUDA provider), the openvino package."""
    return Installed(
        onnxruntime=onnxruntime_available(), cuda=cuda_available(), openvino=openvino_available()
    )
