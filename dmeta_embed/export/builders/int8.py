"""int8 for onnxruntime's CPU kernels: per-row (per-token) activation scales after SmoothQuant-style
smoothing (``export.int8_rows``, ``export.int8_calibration``), weight formats searched on the
model's weights (``export.int8_search``), validated as the runtime will feed it.

Per-row scales make a token's integers depend on that token only, so a text gets the same vector
alone and in any batch, and one outlier token no longer flattens the others' resolution: that is
what keeps most MatMuls of real models in int8 at the bar, where onnxruntime's per-tensor dynamic
int8 had to leave most of them fp32 (docs/performance.md, "int8 with per-row activation scales";
docs/export.md, "Fidelity")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...manifest import Precision, Provider
from ...variant_records import Activations, Int8Recipe
from .. import attention_split, graph, int8_calibration, int8_rows, int8_search
from .. import variants as derive
from ..progress import stage
from ..speed import SpeedRun, Start, calibration_pass
from .base import BaseBuilder, Candidate

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from ..context import Context

#: the calibration texts must lose at most this share of the bar's allowance: with 0.7, a real
#: model's file passed its calibration texts and then missed the bar on other held-out texts
#: (docs/export.md, "Fidelity", the int8 point); int8-ov takes the same margin
MARGIN = 0.5
#: SmoothQuant's migration strength: half of each input channel's range moves into the weights
SMOOTHING = 0.5
#: activation rows sampled per MatMul input to rank the nodes' damage (numpy, no graph)
SAMPLE_ROWS = 512


class INT8(BaseBuilder):
    precision = Precision.INT8
    lossy = True

    def build(self, ctx: Context) -> Candidate:
        found, nodes, rungs, symmetric = self._search(ctx)
        counts = found.counts(nodes)
        model, formats, reasons, trials = found.model, found.formats, found.reasons, found.trials
        del found
        int8_tensors = derive.check_int8_tensors(model)
        path, ops = ctx.save(model, self.precision), graph.op_counts(model)
        del model  # the session loads the file
        with stage(f"int8: validation on {len(ctx.reference)} probe texts, alone and in one batch"):
            runner = ctx.runner(path, Provider.CPU)
            vectors = ctx.embed_runner(runner)
            fid = ctx.fidelity(vectors, self.precision, batch=ctx.batch_figure(runner, vectors))
        return Candidate(
            path,
            ops,
            fid,
            kept_float={n: r for n, r in reasons.items() if formats[n] == int8_search.FP32},
            int8_tensors=int8_tensors,
            int8=Int8Recipe(
                activations=Activations.PER_ROW,
                smoothing=SMOOTHING,
                weights=_by_weight_format(counts),
                asymmetric_rows=sum(
                    1
                    for n in nodes
                    if formats.get(n, rungs[0]) != int8_search.FP32
                    and ("/" in formats.get(n, "") or n not in symmetric)
                ),
                promoted={n: r for n, r in reasons.items() if formats[n] != int8_search.FP32},
                trials=trials,
            ),
            weights_fed="s8",
        )

    def _search(self, ctx: Context) -> tuple[int8_search.RowSearch, list[str], tuple[str, ...], list[str]]:
        """The searched graph (with its head), the nodes searched, the ladder and the nodes with
        symmetric rows. The backbone it quantizes is loaded here and gone on return."""
        backbone = ctx.load(ctx.cpu_backbone_path)
        attention_split.unfuse_attention(backbone)  # its QKV projection becomes a per-row MatMul
        nodes = int8_rows.row_quantizable(backbone)
        rungs = int8_search.ladder(ctx.cpu)
        with stage(f"int8: activation statistics on {len(ctx.calib_tok.ids)} calibration texts"):
            stats = int8_calibration.ActivationStats(
                backbone, ctx.feeds(), sample_rows=SAMPLE_ROWS, nodes=nodes, workdir=ctx.work
            )
            smooth = int8_calibration.smoothing_scales(backbone, stats, alpha=SMOOTHING)
            # a fixed zero point where a node's inputs are two-sided, asymmetric rows elsewhere
            symmetric = int8_calibration.symmetric_nodes(stats, smooth)
            damage = int8_calibration.node_errors(backbone, stats, rungs[0], smooth, symmetric)
            del stats
        reference = ctx.calibration_reference()

        def build(formats: dict[str, str]) -> onnx.ModelProto:
            # the head appended in place: a trial's graph is one copy of the backbone, not two
            rows = int8_rows.quantize_rows(
                backbone, smooth=smooth, weights=rungs[0], formats=formats, symmetric=symmetric
            )
            return ctx.head(rows, copy=False)

        # the ladder starts at s8 only where u8×s8 is exact, and at s7 (never saturates) where it is
        # not: every candidate runs as exported here, as the runtime will run it on this CPU class
        def score(m: onnx.ModelProto) -> np.ndarray:
            return ctx.agreement(ctx.embed(m, ctx.calib_tok), reference)

        with stage(
            f"int8: per-row int8 over {len(nodes)} MatMuls ({' → '.join(rungs)} on {ctx.cpu.cpu_class.value})"
        ):
            found = int8_search.search(
                nodes, build, score, ctx.search_goal(self.precision, MARGIN), rungs, damage
            )
        return found, nodes, rungs, symmetric

    def speed_runs(self, ctx: Context, cand: Candidate) -> dict[SpeedRun, Start]:
        return {SpeedRun(self.precision): lambda: calibration_pass(ctx, ctx.runner(cand.path), Provider.CPU)}


def _by_weight_format(counts: dict[str, int]) -> dict[str, int]:
    """Quantized nodes per weight format (``u8/asym`` counts as ``u8``; fp32 nodes left out)."""
    out: dict[str, int] = {}
    for rung, n in counts.items():
        if rung != int8_search.FP32:
            fmt = int8_search.weight_format(rung)
            out[fmt] = out.get(fmt, 0) + n
    return dict(sorted(out.items()))
