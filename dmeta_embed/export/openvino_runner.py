"""The export's OpenVINO engines: a candidate compiled as the runtime compiles it
(:func:`compile_runner`), the runtime's bulk behaviour with one engine held at a time
(:class:`StagedRunner`, the speed stage's), and ``embed(model, tokenized)`` for the searches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..manifest import Provider
from ..runtime.pipeline import embed_as_runtime
from ..runtime.runner import Feed
from ..variant_records import EngineProperties

if TYPE_CHECKING:
    import onnx

    from ..runtime.openvino import OpenVINORunner
    from ..runtime.tokenize import Tokenized


def compile_runner(
    workdir: Path,
    model: onnx.ModelProto | Path,
    properties: EngineProperties,
    threads: int | None = None,
) -> OpenVINORunner:
    """``model`` compiled with ``properties`` (latency mode) by the runtime's own OpenVINO runner:
    the export validates int8-ov and bf16 with the code and settings that will run them.
    ``model``: a file (compiled from where it is), or a graph written to ``workdir`` first."""
    from ..runtime.openvino import OpenVINORunner

    if isinstance(model, Path):
        return OpenVINORunner(model, threads, properties.config())
    path = workdir / "openvino-candidate.onnx"
    path.write_bytes(model.SerializeToString())
    return OpenVINORunner(path, threads, properties.config())


class StagedRunner:
    """The runtime's OpenVINO runner as ``Embedder.encode`` runs it (``bulk=True``: single texts
    and small calls in latency mode, a large call in streams on a throughput-mode twin), with each
    engine compiled on first need and the twin dropped by :meth:`release_bulk`. ``speed.measure``
    times the bulk passes first and the single texts after, so the export holds one of the two
    engines at a time: both together, beside the fp32 session, were the export's peak (real
    all-mpnet-base-v2 in bf16: 660 MB latency mode, 870 MB the twin; docs/performance.md, "Export
    time and memory"). Which call goes to the twin is the runtime's rule
    (``OpenVINORunner.twin_takes``)."""

    provider = Provider.OPENVINO

    def __init__(self, path: Path, properties: EngineProperties, threads: int | None = None) -> None:
        self._args = (path, threads, properties.config())
        self._latency: OpenVINORunner | None = None
        self._twin: OpenVINORunner | None = None
        #: False once OpenVINO offers one stream here (a single core): no twin, as in the runtime
        self._streams = True

    def _latency_runner(self) -> OpenVINORunner:
        from ..runtime.openvino import OpenVINORunner

        if self._latency is None:
            self._latency = OpenVINORunner(*self._args)
        return self._latency

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        return self._latency_runner().run(input_ids, attention_mask, token_type_ids)

    def run_many(self, batches: Iterable[Feed], count: int | None = None) -> list[np.ndarray]:
        from ..runtime.openvino import OpenVINORunner

        if self._streams and count is not None and OpenVINORunner.twin_takes(count, 2):
            if self._twin is None:
                twin = OpenVINORunner(*self._args, throughput=True)
                self._streams = twin.in_flight >= 2
                self._twin = twin if self._streams else None
            if self._twin is not None and OpenVINORunner.twin_takes(count, self._twin.in_flight):
                return self._twin.run_many(batches)
        return self._latency_runner().run_many(batches)

    def release_bulk(self) -> None:
        """Drop the throughput-mode twin (compiled again on the next large call)."""
        self._twin = None


def openvino_embedder(
    workdir: Path, properties: EngineProperties, pad_id: int, threads: int | None = None
) -> Callable[[onnx.ModelProto | Path, Tokenized], np.ndarray]:
    """``embed(model, tokenized)`` (a graph or its file) through OpenVINO's CPU plugin, batched as
    the runtime batches."""

    def embed(model: onnx.ModelProto | Path, tok: Tokenized) -> np.ndarray:
        runner = compile_runner(workdir, model, properties, threads)
        # [batch, dim] from append_head
        dim = runner.compiled.output(0).get_partial_shape()[-1].get_length()
        return embed_as_runtime(runner, tok, pad_id=pad_id, dim=dim)

    return embed
