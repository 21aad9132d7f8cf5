"""Which inference engines this process can use, found without importing any of them when it
can be helped (``dmeta-embed inspect`` and ``runtime.choice`` work with any one engine, or none),
and starting the one a :class:`~dmeta_embed.runtime.choice.Choice` names."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import MissingDependencyError, ModelLoadError, ProviderError
from ..manifest import Manifest, Provider
from .choice import Choice, Installed
from .runner import Runner


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


def start_runner(
    model_file: Path,
    manifest: Manifest,
    choice: Choice,
    threads: int | None,
    spin: bool,
    throughput: bool,
    bulk: bool,
) -> Runner:
    """``model_file`` loaded on the engine ``choice`` names. OpenVINO: ``throughput`` compiles for
    streams only, ``bulk`` adds a streams twin for large calls (``OpenVINORunner``); onnxruntime:
    ``spin`` keeps its threads spinning between calls. An engine's own load error becomes a
    ``ModelLoadError`` naming the file."""
    spec = manifest.variants[choice.variant.value]
    try:
        if choice.provider == Provider.OPENVINO:
            # imports openvino: only for the variants that run on it
            from .openvino import OpenVINORunner, default_cache_dir

            return OpenVINORunner(
                model_file,
                threads,
                choice.engine_properties,
                inputs=manifest.inputs,
                output=manifest.output,
                cache_dir=default_cache_dir(),
                throughput=throughput,
                bulk=bulk,
            )
        from .session import OnnxRuntimeRunner

        return OnnxRuntimeRunner(
            model_file,
            choice.provider,
            threads,
            spin,
            inputs=manifest.inputs,
            output=manifest.output,
            int8_weights=choice.int8_weights,
            expect_int8_tensors=spec.int8_tensors or None,
        )
    except (ProviderError, MissingDependencyError):
        raise
    except Exception as e:  # onnxruntime and OpenVINO raise their own error types
        engine = "OpenVINO" if choice.provider == Provider.OPENVINO else "onnxruntime"
        raise ModelLoadError(f"{model_file}: {engine} cannot load it ({e})") from e
