"""fp16 for CUDA: fp16 weights and compute from the fused graph (SkipLayerNormalization kept),
validated on CUDA where CUDA starts on this machine, else on onnxruntime's CPU provider."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from ...errors import ProviderError
from ...manifest import Precision, Provider
from ...runtime.installed import cuda_available
from .. import graph
from .. import variants as derive
from ..progress import stage
from .base import BaseBuilder, Candidate

if TYPE_CHECKING:
    from pathlib import Path

    from ..context import Context

log = logging.getLogger(__name__)


class FP16(BaseBuilder):
    precision = Precision.FP16

    def build(self, ctx: Context) -> Candidate:
        model = ctx.head(derive.to_fp16(ctx.load(ctx.backbone_path), copy=False), copy=False)
        path, ops = ctx.save(model, self.precision), graph.op_counts(model)
        del model  # the session loads the file
        provider, vectors, invariance = self._validate(ctx, path)
        return Candidate(
            path,
            ops,
            ctx.fidelity(vectors, self.precision, batch=invariance),
            validated_on=provider.ort_name,
            on_gpu=provider == Provider.CUDA,
        )

    def _validate(self, ctx: Context, model: Path) -> tuple[Provider, np.ndarray, float]:
        """The probe texts' vectors and their batch invariance (:meth:`Context.batch_figure`),
        and where they were computed: on CUDA, where it will run, when CUDA starts here; else on
        the CPU."""
        n = len(ctx.reference)
        if cuda_available():
            try:
                with stage(f"fp16: validation on {n} probe texts (CUDA)"):
                    runner = ctx.runner(model, Provider.CUDA)
                    vectors = ctx.embed_runner(runner)
                    return Provider.CUDA, vectors, ctx.batch_figure(runner, vectors)
            except ProviderError as e:
                # onnxruntime-gpu lists CUDA wherever it is installed, also where CUDA cannot start
                # (no driver, missing libraries); the runtime then runs on the CPU, and so do we
                log.warning("fp16: CUDA is listed but did not start (%s); validating on the CPU", e)
        with stage(f"fp16: validation on {n} probe texts (CPU)"):
            runner = ctx.runner(model, Provider.CPU)
            vectors = ctx.embed_runner(runner)
            return Provider.CPU, vectors, ctx.batch_figure(runner, vectors)
