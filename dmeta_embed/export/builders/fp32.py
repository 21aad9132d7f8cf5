"""fp32: the fused CPU graph with its pooling head, validated through onnxruntime's CPU provider."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...manifest import Precision
from ..progress import stage
from .base import BaseBuilder, Candidate

if TYPE_CHECKING:
    from ..context import Context


class FP32(BaseBuilder):
    precision = Precision.FP32

    def build(self, ctx: Context) -> Candidate:
        model = ctx.fp32_model
        with stage(f"fp32: validation on {len(ctx.reference)} probe texts, alone and in one batch"):
            runner = ctx.runner(model)
            vectors = ctx.embed_runner(runner)
            invariance = ctx.batch_min_cos(runner, vectors)
        return Candidate(model, ctx.fidelity(vectors, self.precision, batch_min_cos=invariance))
