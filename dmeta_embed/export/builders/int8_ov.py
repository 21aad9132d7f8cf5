"""int8-ov for OpenVINO's own runtime: NNCF static int8 searched through OpenVINO
(``export.openvino``), from the raw export (OpenVINO fuses on its own and cannot run onnxruntime's
contrib ops). Where this CPU computes bf16 natively, bf16 float parts are a second candidate, kept
when they meet the bar and run faster."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from ...manifest import Fidelity, Precision, Provider, Variant
from ...rerank_records import ScoreFidelity
from ...runtime.pipeline import embed_as_runtime
from ...variant_records import EngineProperties, Int8Recipe, Speed
from .. import graph, int8_ov_search, openvino, openvino_runner
from ..memory import release
from ..progress import stage
from ..speed import SpeedRun, Start, calibration_pass
from .base import BaseBuilder, Candidate

if TYPE_CHECKING:
    from pathlib import Path

    from ..context import Context


#: the calibration texts must lose at most this share of the bar's allowance, as int8's
#: (``builders.int8.MARGIN``): with 0.7, a real model's weights-only int8 passed its calibration
#: texts and then missed the bar on a held-out repeated-word text; with 0.5 the search keeps a
#: role's weights float instead (docs/export.md, "Fidelity", the int8-ov search)
MARGIN = 0.5


class INT8OV(BaseBuilder):
    precision = Precision.INT8_OV
    lossy = True

    def unavailable(self) -> str | None:
        import importlib.util

        from ..._optional import FEATURES

        missing = [m for m in FEATURES["export-openvino"] if importlib.util.find_spec(m) is None]
        return f"needs {', '.join(missing)} (pip install 'dmeta-embed[export-openvino]')" if missing else None

    def require(self) -> None:
        openvino.require()

    def build(self, ctx: Context) -> Candidate:
        import onnx

        properties = openvino.cpu_properties()
        embed = openvino_runner.openvino_embedder(ctx.work, properties, ctx.tok_info.pad_token_id)
        with stage("int8-ov: NNCF static int8, searched through OpenVINO"):
            # the raw export with its head, on disk: each trial loads it while it quantizes it
            source = ctx.work / "int8-ov.source.onnx"
            onnx.save(ctx.head(ctx.load(ctx.raw_path), copy=False), str(source))
            release()
            found = int8_ov_search.search(
                source,
                ctx.calib_tok,
                embed,
                ctx.search_goal(self.precision, MARGIN),
                ctx.work,
                agreement=ctx.agreement,
            )
        path, ops = ctx.save(found.model, self.precision), graph.op_counts(found.model)
        unquantized, float_weights = found.unquantized, found.float_weights
        del found  # OpenVINO compiles the file
        release()
        with stage(f"int8-ov: validation on {len(ctx.reference)} probe texts, alone and in one batch"):
            fid = self._validate(ctx, path, properties)
        cand = Candidate(
            path,
            ops,
            fid,
            kept_float=unquantized,
            validated_on=openvino.engine_version(),
            engine_properties=properties,
            int8=Int8Recipe(float_weights=float_weights),
        )
        if ctx.cpu.bf16 and fid.passed:
            # bf16 float parts where this CPU computes bf16 natively: kept in settle() only if it
            # meets the bar and runs faster (docs/performance.md, "OpenVINO")
            with stage("int8-ov: validation with bf16 float parts"):
                cand.extra["bf16"] = self._validate(ctx, path, openvino.BF16)
        return cand

    def _validate(self, ctx: Context, path: Path, properties: EngineProperties) -> Fidelity | ScoreFidelity:
        """Fidelity on the probe texts through OpenVINO with ``properties``, and how far a text
        alone differs from the same text in a batch (static scales make it batch-invariant up to
        float summation order; a server reads it: runtime.choice.batch_invariance_problem)."""
        runner = openvino_runner.compile_runner(ctx.work, path, properties)
        vectors = embed_as_runtime(runner, ctx.probe_tok, pad_id=ctx.tok_info.pad_token_id, dim=ctx.out_dim)
        return ctx.fidelity(vectors, self.precision, batch=ctx.batch_figure(runner, vectors))

    def speed_runs(self, ctx: Context, cand: Candidate) -> dict[SpeedRun, Start]:
        def run(properties: EngineProperties) -> Start:
            def start() -> Callable[[], object]:
                runner = openvino_runner.StagedRunner(cand.path, properties)
                return calibration_pass(ctx, runner, Provider.OPENVINO, runner.release_bulk)

            return start

        runs = {SpeedRun(self.precision, cand.engine_properties): run(cand.engine_properties)}
        bf16 = cand.extra.get("bf16")
        if bf16 is not None and bf16.passed:
            runs[SpeedRun(self.precision, openvino.BF16)] = run(openvino.BF16)
        return runs

    def settle(self, variant: Variant, cand: Candidate, speeds: dict[SpeedRun, Speed]) -> Variant:
        import logging

        f32 = speeds.get(SpeedRun(self.precision, cand.engine_properties))
        bf16 = speeds.get(SpeedRun(self.precision, openvino.BF16))
        if f32 is None:
            return variant
        if bf16 is None:
            return replace(variant, speed=f32)
        faster = bf16.tokens_per_s > f32.tokens_per_s
        logging.getLogger(__name__).info(
            "int8-ov: bf16 float parts %d tokens/s vs f32 %d: keeping %s",
            bf16.tokens_per_s,
            f32.tokens_per_s,
            "bf16" if faster else "f32",
        )
        if faster:
            return replace(
                variant,
                engine_properties=openvino.BF16,
                fidelity=cand.extra["bf16"],
                speed=replace(bf16, f32_tokens_per_s=f32.tokens_per_s),
            )
        return replace(variant, speed=replace(f32, bf16_tokens_per_s=bf16.tokens_per_s))
