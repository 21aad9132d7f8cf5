"""fp16 for CUDA: fp16 weights and compute from the fused graph (SkipLayerNormalization kept),
validated on CUDA where CUDA starts on this machine, else on onnxruntime's CPU provider."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from ...errors import ProviderError
from ...manifest import Precision, Provider
from ...runtime.installed import cuda_available
from .. import variants as derive
from ..progress import stage
from .base import BaseBuilder, Candidate

if TYPE_CHECKING:
    import onnx

    from ...runtime.runner import Runner
    from ..context import Context

log = logging.getLogger(__name__)


class FP16(BaseBuilder):
    precision = Precision.FP16

    def build(self, ctx: Context) -> Candidate:
        model = ctx.head(derive.to_fp16(ctx.backbone))
        provider, runner, vectors = self._validate(ctx, model)
        invariance = ctx.batch_min_cos(runner, vectors)
        return Candidate(
            model,
            ctx.fidelity(vectors, self.precision, batch_min_cos=invariance),
            validated_on=provider.ort_name,
            on_gpu=provider == Provider.CUDA,
        )

    def _validate(self, ctx: Context, model: onnx.ModelProto) -> tuple[Provider, Runner, np.ndarray]:
        """The probe texts' vectors, where and through which session they were computed: on
        CUDA, where it will run, when CUDA starts here; else on the CPU."""
        n = len(ctx.reference)
        if cuda_available():
            try:
                with stage(f"fp16: validation on {n} probe texts (CUDA)"):
                    runner = ctx.runner(model, Provider.CUDA)
                    return Provider.CUDA, runner, ctx.embed_runner(runner)
            except ProviderError as e:
                # onnxruntime-gpu lists CUDA wherever it is installed, also where CUDA cannot start
                # (no driver, missing libraries); the runtime then runs on the CPU, and so do we
                log.warning("fp16: CUDA is listed but did not start (%s); validating on the CPU", e)
        with stage(f"fp16: validation on {n} probe texts (CPU)"):
            runner = ctx.runner(model, Provider.CPU)
            return Provider.CPU, runner, ctx.embed_runner(runner)
