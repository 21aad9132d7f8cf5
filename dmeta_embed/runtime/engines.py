"""Which inference engines this process can use, found without importing any of them when it
can be helped (``dmeta-embed inspect`` and ``runtime.choice`` work with any one engine, or none)."""

from __future__ import annotations

import importlib.util

from .choice import Installed


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` (the fp32/fp16/int8 variants' engine) can be imported; looked up only."""
    return _findable("onnxruntime")


def openvino_available() -> bool:
    """Whether the ``openvino`` package (the int8-ov and bf16 variants' engine, ``runtime.openvino``) can be
    imported here; it is looked up, not imported."""
    return _findable("openvino")


def cuda_available() -> bool:
    """Whether onnxruntime offers its CUDA provider (imports onnxruntime, when it is installed)."""
    if not onnxruntime_available():
        return False
    from .session import CUDA, ort

    return CUDA in ort().get_available_providers()


def installed() -> Installed:
    """The engines this process can use: onnxruntime (and its CUDA provider), the openvino package."""
    return Installed(
        onnxruntime=onnxruntime_available(), cuda=cuda_available(), openvino=openvino_available()
    )
