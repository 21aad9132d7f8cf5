"""fp32: the fused CPU graph with its pooling head (written by ``context.prepare``), validated
through onnxruntime's CPU provider."""

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
        with stage(f"fp32: validation on {len(ctx.reference)} probe texts, alone and in one batch"):
            runner = ctx.fp32_runner()
            vectors = ctx.embed_runner(runner)
            invariance = ctx.batch_figure(runner, vectors)
        fid = ctx.fidelity(vectors, self.precision, batch=invariance)
        return Candidate(ctx.fp32_path, ctx.fp32_ops, fid)
