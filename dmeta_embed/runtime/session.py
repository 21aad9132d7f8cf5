"""ONNX Runtime sessions: provider choice, thread count, and the run call (IO binding on CUDA)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ProviderError
from ..manifest import Provider
from .cpu import available_cpus
from .installed import CPU, CUDA, cuda_available, ort
from .int8 import shift_int8_weights
from .runner import Feed, feed, feed_names

if TYPE_CHECKING:
    import onnxruntime


def session_options(threads: int | None, spin: bool = True) -> onnxruntime.SessionOptions:
    """CPU options chosen by measurement (docs/runtime.md): sequential, one inter-op thread,
    no memory pattern (shapes change every batch, and the pattern cache grows per shape).

    ``spin=False`` stops idle worker threads from busy-waiting between ops: on a machine shared
    with other work (a server's event loop, the client) that busy-waiting steals the CPU the
    request needs."""
    rt = ort()
    so = rt.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.intra_op_num_threads = threads or available_cpus()
    so.inter_op_num_threads = 1
    so.execution_mode = rt.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_mem_pattern = False
    so.log_severity_level = 3
    return so


#: onnxruntime 1.32's SkipLayerNormalization CPU kernel is far slower than Add + LayerNormalization
#: (docs/performance.md); the export unfuses it for the CPU variants, and this keeps it unfused
CPU_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


class OnnxRuntimeRunner:
    """One onnxruntime session over an embedding graph: (input_ids, attention_mask) → [B, dim]
    (a :class:`~dmeta_embed.runtime.runner.Runner`; int8-ov runs on OpenVINO instead:
    ``runtime.openvino.OpenVINORunner``).

    ``inputs``/``output``: the graph's tensor names (the manifest's; None: the graph's own). ``int8_weights="u8"``
    shifts the file's s8 weights to u8 before onnxruntime sees it (``runtime.int8``), for CPUs
    whose u8×s8 kernels saturate; ``expect_int8_tensors`` (the manifest's count) guards that rewrite.
    """

    def __init__(
        self,
        model: str | Path | bytes,
        provider: Provider | str = Provider.CPU,
        threads: int | None = None,
        spin: bool = True,
        *,
        inputs: tuple[str, ...] | None = None,
        output: str | None = None,
        int8_weights: str | None = None,
        expect_int8_tensors: int | None = None,
    ) -> None:
        provider = Provider.parse(provider)
        so = session_options(threads, spin)
        providers: list[str | tuple[str, dict[str, str]]] = [CPU]
        if provider == Provider.CUDA:
            if not cuda_available():
                raise ProviderError(
                    "CUDA was asked for but this onnxruntime has no CUDAExecutionProvider; "
                    "install onnxruntime-gpu instead of onnxruntime: pip install 'dmeta-embed[gpu]'"
                )
            providers = [(CUDA, {"cudnn_conv_algo_search": "DEFAULT"}), CPU]
        elif provider == Provider.OPENVINO:
            raise ProviderError(
                "the OpenVINO variant runs on OpenVINO's own runtime "
                "(dmeta_embed.runtime.openvino.OpenVINORunner), not an onnxruntime session"
            )
        model_arg: str | bytes = model if isinstance(model, bytes) else str(model)
        if int8_weights == "u8":
            data = model_arg if isinstance(model_arg, bytes) else Path(model_arg).read_bytes()
            model_arg, shifted = shift_int8_weights(data)
            if expect_int8_tensors is not None and shifted != expect_int8_tensors:
                raise ProviderError(
                    f"int8 weight shift found {shifted} int8 tensors, the manifest says "
                    f"{expect_int8_tensors}; load variant='fp32' instead"
                )
        self.session = ort().InferenceSession(
            model_arg,
            sess_options=so,
            providers=providers,
            disabled_optimizers=CPU_DISABLED_OPTIMIZERS if provider == Provider.CPU else None,
        )
        if provider != Provider.CPU and self.session.get_providers()[0] != provider.ort_name:
            # onnxruntime silently falls back to CPU when a provider's libraries are missing
            raise ProviderError(
                f"{provider.ort_name} failed to start"
                + (" (CUDA 12/13 and cuDNN 9 libraries missing?)" if provider == Provider.CUDA else "")
                + "; see onnxruntime's log above, or use provider='cpu'"
            )
        self.provider: Provider = provider
        self._names = feed_names([i.name for i in self.session.get_inputs()], inputs)
        #: None: the graph's one output (the export's candidates: ``sentence_embedding`` or ``logits``)
        self._output: str = output or self.session.get_outputs()[0].name

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        feeds = feed(self._names, (input_ids, attention_mask, token_type_ids))
        if self.provider == Provider.CUDA:
            # IO binding: inputs copied to the device once, only [B, dim] copied back
            io = self.session.io_binding()
            for name, array in feeds.items():
                io.bind_cpu_input(name, array)
            io.bind_output(self._output, "cuda")
            self.session.run_with_iobinding(io)
            return io.copy_outputs_to_cpu()[0]  # type: ignore[no-any-return]
        out = self.session.run([self._output], feeds)
        return out[0]  # type: ignore[no-any-return]

    def run_many(self, batches: Iterable[Feed], count: int | None = None) -> list[np.ndarray]:
        """Each batch's output in order, one at a time: a session already uses every thread it
        was given on one batch."""
        return [self.run(*batch) for batch in batches]
