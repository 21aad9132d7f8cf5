"""Starting the engine a :class:`~dmeta_embed.runtime.choice.Choice` names, importing it only
then (engines are found, not imported, by :mod:`dmeta_embed.runtime.installed`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import MissingDependencyError, ModelLoadError, ProviderError
from ..manifest import Manifest, Provider
from .choice import Choice
from .runner import Runner


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
