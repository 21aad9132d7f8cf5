"""bf16 for OpenVINO's own runtime: the fp32 variant's graph (``model.onnx``, the fused CPU graph
with its head: OpenVINO compiles its ``com.microsoft`` Attention itself) run with
``INFERENCE_PRECISION_HINT=bf16``. No file of its own: the manifest entry points at
``model.onnx`` and records the property.

Built only where this CPU computes bf16 natively (``CpuInfo.bf16``: AMX-bf16 or AVX512-BF16).
Elsewhere OpenVINO quietly compiles the hint as f32, so the "bf16" entry would be fp32 on another
engine, measured and chosen as something it is not: a plain export leaves it out with that reason,
and asking for it by name is an :class:`~dmeta_embed.errors.ExportError`. The build also checks the
compiled model's execution precision, in case the flags and OpenVINO disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ...errors import ExportError
from ...manifest import Precision, Provider
from ...runtime.cpu import CpuInfo, detect
from ...variant_records import EngineProperties, InferencePrecision
from ..progress import stage
from .base import BaseBuilder, Candidate

if TYPE_CHECKING:
    from ...runtime.openvino import OpenVINORunner
    from ..context import Context
    from ..speed import SpeedRun, Start

#: the OpenVINO CPU properties the variant is validated, timed and run with
PROPERTIES = EngineProperties(InferencePrecision.BF16)


class BF16(BaseBuilder):
    """``cpu``: the CPU to decide availability for (tests inject one; default: this machine)."""

    precision = Precision.BF16

    def __init__(self, cpu: CpuInfo | None = None) -> None:
        self._cpu = cpu

    @property
    def cpu(self) -> CpuInfo:
        return self._cpu if self._cpu is not None else detect()

    def unavailable(self) -> str | None:
        import importlib.util

        cpu = self.cpu
        if not cpu.bf16:
            return (
                f"this CPU has no native bf16 (AMX-bf16 or AVX512-BF16; it is {cpu.describe()}): "
                "OpenVINO would run it in f32"
            )
        if importlib.util.find_spec("openvino") is None:
            return "needs openvino (pip install 'dmeta-embed[openvino]')"
        return None

    def require(self) -> None:
        from ..._optional import require

        if not self.cpu.bf16:
            raise ExportError(f"variant bf16 cannot be built here: {self.unavailable()}")
        require("openvino")

    def build(self, ctx: Context) -> Candidate:
        from ...runtime.pipeline import embed_as_runtime
        from ..openvino import engine_version
        from ..openvino_runner import compile_runner

        with stage(f"bf16: validation on OpenVINO, {len(ctx.reference)} probe texts"):
            runner = compile_runner(ctx.work, ctx.fp32_path, PROPERTIES)
            _check_bf16(runner)
            vectors = embed_as_runtime(
                runner, ctx.probe_tok, pad_id=ctx.tok_info.pad_token_id, dim=ctx.out_dim
            )
            # a server batches concurrent requests: bf16 is close to batch-invariant, not exactly
            fid = ctx.fidelity(vectors, self.precision, batch=ctx.batch_figure(runner, vectors))
        return Candidate(
            ctx.fp32_path,
            ctx.fp32_ops,
            fid,
            validated_on=engine_version(),
            engine_properties=PROPERTIES,
        )

    def speed_runs(self, ctx: Context, cand: Candidate) -> dict[SpeedRun, Start]:
        from ..openvino_runner import StagedRunner
        from ..speed import SpeedRun, calibration_pass

        def start() -> Callable[[], object]:
            runner = StagedRunner(cand.path, cand.engine_properties)
            return calibration_pass(ctx, runner, Provider.OPENVINO, runner.release_bulk)

        return {SpeedRun(self.precision, cand.engine_properties): start}


def _check_bf16(runner: OpenVINORunner) -> None:
    """Refuse a compile that OpenVINO turned into f32 (no bf16 units it trusts on this CPU)."""
    hint = runner.compiled.get_property("INFERENCE_PRECISION_HINT")
    got = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    if got != "bf16":
        raise ExportError(
            f"variant bf16: OpenVINO compiled the graph with execution precision {got}, not bf16, "
            "on this CPU; export without bf16"
        )
