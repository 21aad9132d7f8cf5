"""Tokens/s of each CPU variant against fp32 on the export machine: what ``auto`` needs to never
pick a variant slower than fp32 on this CPU class (recorded as the manifest's ``speed``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..manifest import VARIANT_PROVIDERS, Precision, Provider
from .progress import Progress

if TYPE_CHECKING:
    from ..runtime.runner import Runner
    from .context import Context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeedRun:
    """One timed configuration: a variant's file run with given engine properties (int8-ov with
    bf16 float parts is ``SpeedRun(INT8_OV, (("INFERENCE_PRECISION_HINT", "bf16"),))``)."""

    precision: Precision
    engine_properties: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, precision: Precision, properties: Mapping[str, str] | None = None) -> SpeedRun:
        return cls(precision, tuple(sorted((properties or {}).items())))

    @property
    def properties(self) -> dict[str, str]:
        return dict(self.engine_properties)

    @property
    def label(self) -> str:
        extra = ",".join(v for _, v in self.engine_properties)
        return f"{self.precision.value}+{extra}" if extra else self.precision.value


#: the baseline every other run is compared with
FP32 = SpeedRun(Precision.FP32)


def measure(
    runs: Mapping[SpeedRun, Callable[[], object]],
    tokens: int,
    cpu_class: str,
    rounds: int = 2,
) -> dict[SpeedRun, dict[str, Any]]:
    """Time each run (one pass over the same texts, batched as the runtime batches) and return
    its manifest ``speed`` record. The runs take turns (``rounds`` passes each) and keep their
    fastest, so a burst of other work on the machine slows one pass, not one variant. ``runs``
    must hold :data:`FP32`."""
    if FP32 not in runs:
        raise ValueError("speed runs need the fp32 baseline")
    reps = {}
    # the warm-up is one step of the estimate: on a base-size model it is 1 of 3 passes per run
    progress = Progress("speed", rounds + 1)
    for r, run in runs.items():  # warm-up (weight packing, first-shape compiles), timed to size a pass
        t0 = time.perf_counter()
        run()
        # tiny models: >= 50 ms a timed pass (the warm-up over-estimates a pass: fewer reps, not more)
        reps[r] = max(1, round(0.05 / max(time.perf_counter() - t0, 1e-6)))
    progress.step("warm-up")
    best = {r: float("inf") for r in runs}
    for _ in range(rounds):
        for r, run in runs.items():
            t0 = time.perf_counter()
            for _ in range(reps[r]):
                run()
            best[r] = min(best[r], (time.perf_counter() - t0) / reps[r])
        progress.step()
    base = tokens / best[FP32]
    out: dict[SpeedRun, dict[str, Any]] = {}
    for r, seconds in best.items():
        rate = tokens / seconds
        out[r] = {
            "cpu_class": cpu_class,
            "tokens_per_s": round(rate),
            "vs_fp32": round(rate / base, 3),
            "engine": VARIANT_PROVIDERS[r.precision].engine,
        }
        if r != FP32:
            log.info(
                "%s: %.0f tokens/s, %.2fx fp32 (%.0f) on %s", r.label, rate, rate / base, base, cpu_class
            )
    return out


def calibration_pass(ctx: Context, runner: Runner, provider: Provider) -> Callable[[], object]:
    """One pass of ``runner`` over the calibration texts, batched as the runtime batches them
    for ``provider``: what :func:`measure` times."""
    from ..runtime.embedder import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS
    from ..runtime.pipeline import embed_tokenized

    return lambda: embed_tokenized(
        runner,
        ctx.calib_tok,
        pad_id=ctx.tok_info.pad_token_id,
        dim=ctx.hidden,
        max_batch_tokens=DEFAULT_BATCH_TOKENS[provider],
        batch_size=DEFAULT_BATCH_SIZE,
    )
