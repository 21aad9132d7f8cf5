"""fp16 for CUDA: fp16 weights and compute from the fused graph (SkipLayerNormalization kept),
validated on CUDA where this machine has it, else on onnxruntime's CPU provider."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...manifest import Precision, Provider
from ...runtime.engines import cuda_available
from .. import variants as derive
from ..progress import stage
from .base import BaseBuilder, Candidate

if TYPE_CHECKING:
    from ..context import Context


class FP16(BaseBuilder):
    precision = Precision.FP16

    def build(self, ctx: Context) -> Candidate:
        model = ctx.head(derive.to_fp16(ctx.backbone))
        provider = Provider.CUDA if cuda_available() else Provider.CPU  # where it will run, when we can
        with stage(f"fp16: validation on {len(ctx.reference)} probe texts"):
            vectors = ctx.embed(model, provider=provider)
        return Candidate(
            model,
            ctx.fidelity(vectors, self.precision),
            validated_on=provider.ort_name,
            on_gpu=provider == Provider.CUDA,
        )
