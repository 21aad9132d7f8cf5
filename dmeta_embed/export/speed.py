"""Tokens/s of each CPU variant against fp32 on the export machine, and its latency on one short
text per call: what ``auto`` needs to never pick a variant slower than fp32 on this CPU class, and
to pick the fastest one for bulk work and for a server's single queries (the manifest's ``speed``:
``tokens_per_s``, ``vs_fp32``, ``query_ms``).

The two orders differ by model size and CPU class, so both are measured: on one class OpenVINO's
bf16 was the fastest for both on a base-size model, while on a small model onnxruntime's int8
answered single queries first and bf16 ran bulk work fastest (docs/performance.md, "Real
weights", the AMX section's "Single queries")."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..manifest import VARIANT_PROVIDERS, Precision, Provider
from ..variant_records import EngineProperties, Speed
from .progress import Progress

if TYPE_CHECKING:
    from ..runtime.runner import Runner
    from .context import Context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeedRun:
    """One timed configuration: a variant's file run with given engine properties (int8-ov with
    bf16 float parts is ``SpeedRun(INT8_OV, EngineProperties(InferencePrecision.BF16))``)."""

    precision: Precision
    engine_properties: EngineProperties = EngineProperties()

    @property
    def label(self) -> str:
        extra = ",".join(self.engine_properties.config().values())
        return f"{self.precision.value}+{extra}" if extra else self.precision.value


#: the baseline every other run is compared with
FP32 = SpeedRun(Precision.FP32)

#: a timed run not started yet: starts its engine and returns what :func:`measure` times (the
#: export starts one at a time, so no two variants' engines are held at once)
Start = Callable[[], Callable[[], object]]

#: single-text calls timed per round for ``query_ms``, and their token counts (special tokens
#: included): the short queries a search service embeds one at a time, of varied lengths (a new
#: length is a new input shape: the warm-up pass has seen each one, so this is steady state)
QUERY_CALLS = 24
QUERY_LENGTHS = (8, 12, 16, 20, 24, 32)


@dataclass(frozen=True)
class Pass:
    """What :func:`measure` times for one run: ``bulk()``, one pass over the calibration texts
    batched as the runtime batches them, and ``query(i)``, the ``i``-th single short text alone.
    Calling the pass is ``bulk()``. ``bulk_done()``: called once every bulk pass is timed, before
    the single texts, to drop what only bulk work needs (OpenVINO's throughput-mode engine:
    ``export.openvino_runner.StagedRunner``)."""

    bulk: Callable[[], object]
    query: Callable[[int], object] | None = None
    bulk_done: Callable[[], None] | None = None

    def __call__(self) -> object:
        return self.bulk()


def measure(
    runs: Mapping[SpeedRun, Callable[[], object]],
    tokens: int,
    cpu_class: str,
    rounds: int = 2,
) -> dict[SpeedRun, Speed]:
    """Time each run (one pass over the same texts, batched as the runtime batches) and return
    its manifest ``speed`` record. The runs take turns (``rounds`` passes each) and keep their
    fastest, so a burst of other work on the machine slows one pass, not one variant. ``runs``
    must hold :data:`FP32`. A run that is a :class:`Pass` with ``query`` is then timed on
    :data:`QUERY_CALLS` single texts per round, taking turns the same way (after a warm-up that
    runs each once): the median call of its best round is ``query_ms``. Bulk passes first, single
    texts after, so an engine that serves only one of them is held for that part only."""
    if FP32 not in runs:
        raise ValueError("speed runs need the fp32 baseline")
    reps = {}
    queries = {r: run.query for r, run in runs.items() if isinstance(run, Pass) and run.query is not None}
    # the warm-up is one step of the estimate: on a base-size model it is 1 of 3 passes per run
    progress = Progress("speed", (rounds + 1) * (2 if queries else 1))
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
    for run in runs.values():
        if isinstance(run, Pass) and run.bulk_done is not None:
            run.bulk_done()
    query_s = {r: float("inf") for r in queries}
    if queries:
        for query in queries.values():  # every length once: each is a new input shape
            for i in range(QUERY_CALLS):
                query(i)
        progress.step("single texts: warm-up")
        for _ in range(rounds):
            for r, query in queries.items():
                calls = []
                for i in range(QUERY_CALLS):
                    t0 = time.perf_counter()
                    query(i)
                    calls.append(time.perf_counter() - t0)
                query_s[r] = min(query_s[r], sorted(calls)[len(calls) // 2])
            progress.step()
    base = tokens / best[FP32]
    out: dict[SpeedRun, Speed] = {}
    for r, seconds in best.items():
        rate = tokens / seconds
        out[r] = Speed(
            cpu_class=cpu_class,
            tokens_per_s=round(rate),
            vs_fp32=round(rate / base, 3),
            engine=VARIANT_PROVIDERS[r.precision].engine,
            query_ms=round(query_s[r] * 1e3, 3) if r in query_s else None,
        )
        if r != FP32:
            log.info(
                "%s: %.0f tokens/s, %.2fx fp32 (%.0f) on %s%s",
                r.label,
                rate,
                rate / base,
                base,
                cpu_class,
                f"; one short text {query_s[r] * 1e3:.2f} ms" if r in query_s else "",
            )
    return out


def anchored(timed: Mapping[SpeedRun, tuple[Speed, Speed]]) -> dict[SpeedRun, Speed]:
    """The speed records of runs each timed in its own :func:`measure` call beside fp32 (run →
    (its record, fp32's record of the same rounds)), on one scale: fp32's record is the fastest
    of its rounds (highest rate, lowest one-text latency), and each run's ``tokens_per_s`` and
    ``query_ms`` are its own times fp32's best over fp32's in its rounds, so runs timed minutes
    apart on a busy machine compare with each other (and with fp32) as if they had taken turns
    together. ``vs_fp32`` is the ratio measured in its rounds, as before."""
    bases = [base for _, base in timed.values()]
    if not bases:
        return {}
    fp32 = max(bases, key=lambda b: b.tokens_per_s)
    queries = [b.query_ms for b in bases if b.query_ms is not None]
    if queries:
        fp32 = replace(fp32, query_ms=min(queries))
    out = {FP32: fp32}
    for run, (record, base) in timed.items():
        record = replace(
            record, tokens_per_s=round(record.tokens_per_s * fp32.tokens_per_s / base.tokens_per_s)
        )
        if record.query_ms is not None and base.query_ms is not None and fp32.query_ms is not None:
            record = replace(record, query_ms=round(record.query_ms * fp32.query_ms / base.query_ms, 3))
        out[run] = record
    return out


def query_ids(calib: list[list[int]], n: int = QUERY_CALLS) -> list[list[int]]:
    """``n`` short single texts cut from the calibration texts: the ``i``-th has
    ``QUERY_LENGTHS[i % 6]`` tokens (or its text's own, if shorter), first and last special token
    kept."""
    out = []
    for i in range(n):
        ids = calib[i % len(calib)]
        length = QUERY_LENGTHS[i % len(QUERY_LENGTHS)]
        out.append(list(ids) if len(ids) <= length else [*ids[: length - 1], ids[-1]])
    return out


def calibration_pass(
    ctx: Context, runner: Runner, provider: Provider, bulk_done: Callable[[], None] | None = None
) -> Pass:
    """One pass of ``runner`` over the calibration texts, batched as the runtime batches them
    on its provider, and its single short texts: what :func:`measure` times (``bulk_done``:
    :attr:`Pass.bulk_done`)."""
    import numpy as np

    from ..runtime.pipeline import embed_as_runtime

    singles = [np.asarray([ids], np.int64) for ids in query_ids(ctx.calib_tok.ids)]
    # a reranker's pairs: their token types cut the same way (the last token is the document's)
    types = ctx.calib_tok.type_ids
    single_types = None if types is None else [np.asarray([t], np.int64) for t in query_ids(types)]

    def query(i: int) -> object:
        ids = singles[i % len(singles)]
        tt = None if single_types is None else single_types[i % len(single_types)]
        return runner.run(ids, np.ones_like(ids), tt)

    return Pass(
        lambda: embed_as_runtime(runner, ctx.calib_tok, pad_id=ctx.tok_info.pad_token_id, dim=ctx.out_dim),
        query,
        bulk_done,
    )
