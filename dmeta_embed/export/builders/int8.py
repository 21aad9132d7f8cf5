"""int8 for onnxruntime's CPU kernels: dynamic int8 with the sensitivity search
(``export.variants.search_int8``), validated with the weights fed as this CPU computes them exactly."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ...manifest import Precision, Provider
from .. import variants as derive
from ..progress import stage
from ..speed import SpeedRun, calibration_pass
from .base import BaseBuilder, Candidate

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from ..context import Context


class INT8(BaseBuilder):
    precision = Precision.INT8
    lossy = True

    def build(self, ctx: Context) -> Candidate:
        weights = ctx.int8_weights
        backbone = ctx.int8_backbone
        n = len(derive.quantizable_nodes(backbone))
        with stage(
            f"int8: dynamic int8 search over {n} nodes ({weights or 's8'} weights on {ctx.cpu.cpu_class.value})"
        ):

            def evaluate(m: onnx.ModelProto) -> np.ndarray:
                return ctx.embed(ctx.head(m), ctx.calib_tok, weights=weights)

            # looked up on the module so tests can replace the search
            result = derive.search_int8(
                backbone,
                evaluate,
                ctx.calibration_reference(),
                ctx.bars[self.precision],
                calib=ctx.calib_tok,
                head=ctx.head,
                pad_id=ctx.tok_info.pad_token_id,
            )
        model = ctx.head(result.model)
        int8_tensors = derive.check_int8_tensors(model)
        with stage(f"int8: validation on {len(ctx.reference)} probe texts"):
            vectors = ctx.embed(model, weights=weights)
        return Candidate(
            model,
            ctx.fidelity(vectors, self.precision),
            kept_float=result.kept_float,
            int8_tensors=int8_tensors,
        )

    def speed_runs(self, ctx: Context, cand: Candidate) -> dict[SpeedRun, Callable[[], object]]:
        runner = ctx.runner(cand.model, Provider.CPU, ctx.int8_weights)
        return {SpeedRun.of(self.precision): calibration_pass(ctx, runner, Provider.CPU)}
