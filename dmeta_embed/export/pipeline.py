"""``export_model``: a Hugging Face model → a validated folder of ONNX variants + manifest.json.

The shared steps (tokenizer, PyTorch reference, TorchScript export, fusion) are
:func:`context.prepare`; each variant is one builder (``export.builders``); the speed runs are
``export.speed``. A variant that misses its bar is left out and named, while the variants that
met theirs are written: :class:`VariantsLeftOutError` after the folder is in place.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from .._optional import installed_version, require_feature
from .._version import __version__
from ..errors import ExportError, FidelityError, VariantsLeftOutError
from ..manifest import (
    BARS,
    OUTPUT_NAME,
    VARIANT_FILES,
    VARIANT_PROVIDERS,
    Bar,
    Manifest,
    Pooling,
    Precision,
    Variant,
    sha256_file,
)
from ..rerank_records import LOGITS
from ..variant_records import Speed, ValidatedCpu
from . import graph
from .builders import BUILDERS, Builder, Candidate, default_variants
from .context import Context, prepare
from .memory import Peaks, release
from .progress import quiet_third_party, stage
from .source import DEFAULT_MODEL, Source, resolve
from .speed import FP32, SpeedRun, anchored, measure

log = logging.getLogger(__name__)

TOOLS = ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "tokenizers", "nncf", "openvino")


def _tool_versions() -> dict[str, str]:
    out = {"dmeta-embed": __version__}
    for pkg in TOOLS:
        v = installed_version(pkg)
        if v is not None:
            out[pkg] = v
    return out


def _prepare_output(output: Path, force: bool) -> None:
    if output.exists():
        if not force:
            raise ExportError(f"output folder {output} exists; pass --force to replace it")
        if output.is_dir() and not (output / "manifest.json").exists() and any(output.iterdir()):
            raise ExportError(f"{output} is a non-empty folder that is not an export; refusing to replace it")


def _wanted(variants: Iterable[str] | None) -> list[Precision]:
    if variants is None:
        chosen, skipped = default_variants()
        for p, why in skipped.items():
            log.info("%s: skipped (%s)", p.value, why)
        return chosen
    wanted = list(dict.fromkeys(Precision(v) for v in variants))
    if not wanted:
        raise ExportError("no variants asked for")
    for p in wanted:
        BUILDERS[p].require()
    return wanted


def export_model(
    model: str = DEFAULT_MODEL,
    output: str | Path = "out/dmeta",
    *,
    variants: Iterable[str] | None = None,
    pooling: str | Pooling | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
    revision: str | None = None,
    force: bool = False,
    allow_low_fidelity: bool = False,
    trust_remote_code: bool = False,
    bars: dict[Precision, Bar] | None = None,
    truncate_dims: Iterable[int] = (),
    activation: str | None = None,
) -> Manifest:
    """Export ``model`` (hub id or local folder) into ``output``; return the written manifest.

    ``variants`` None: every variant the runtime's ``auto`` can choose whose engine is installed
    here (int8-ov with the ``export-openvino`` extra). Every variant is validated against the
    PyTorch reference on the built-in probe set. One that misses its bar (int8 kinds: unless
    ``allow_low_fidelity``) is left out: the others are written and then
    :class:`VariantsLeftOutError` names what was left out; when none met its bar,
    :class:`FidelityError` and nothing is written. A cross-encoder (a ``...ForSequenceClassification``
    folder) exports as a rerank folder: its classification head in the graph (output ``logits``),
    validated on probe pairs by scores (``ScoreFidelity``); ``activation`` overrides the one its
    files name. The folder is built beside ``output`` and moved
    into place at the end, so a failed or interrupted export leaves nothing behind.
    """
    t0 = time.perf_counter()
    require_feature("export")
    wanted = _wanted(variants)
    bars = {**BARS, **(bars or {})}
    output = Path(output)
    _prepare_output(output, force)
    src = resolve(
        model,
        revision=revision,
        pooling=Pooling(pooling) if pooling else None,
        normalize=normalize,
        max_length=max_length,
        trust_remote_code=trust_remote_code,
        truncate_dims=tuple(truncate_dims),
        activation=activation,
    )
    log.info(
        "exporting %s (%s %s, pooling=%s from %s, max_length=%d): %s",
        src.model_id,
        src.model_type,
        src.task.value,
        src.pooling.value,
        src.pooling_origin,
        src.max_length,
        ", ".join(p.value for p in wanted),
    )

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        with quiet_third_party():
            manifest, missed = _build(src, staging, wanted, bars, allow_low_fidelity, t0)
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if missed:
        written = list(manifest.variants)
        raise VariantsLeftOutError(
            f"left out {'; '.join(f'{k} ({why})' for k, why in missed.items())}; "
            f"wrote {', '.join(written)} to {output}",
            str(output),
            written,
            missed,
        )
    return manifest


def _build(
    src: Source,
    out: Path,
    wanted: list[Precision],
    bars: dict[Precision, Bar],
    allow_low_fidelity: bool,
    t0: float,
) -> tuple[Manifest, dict[str, str]]:
    """Build every wanted variant into ``out``; return the manifest and the variants left out
    (name → why). Raises :class:`FidelityError` when none met its bar.

    One variant at a time: built, written, validated and timed, and its graphs and engines
    dropped before the next one starts (the fused graphs wait on disk in the work folder); each
    timed run holds one engine beside a fp32 session. Real all-mpnet-base-v2 with every variant
    peaked at 2.6 GB here, 9.6 GB when the graphs and every variant's engines stayed to the end
    (docs/performance.md, "Export time and memory")."""
    timings: dict[str, float] = {}
    peaks = Peaks()
    ctx = prepare(src, out, bars, timings, peaks)
    built: dict[Precision, tuple[Variant, Candidate]] = {}
    #: each file a kept variant points at, and its sha256
    written: dict[Path, str] = {}
    left_out: list[Path] = []
    missed: dict[str, str] = {}
    #: each timed run's speed record and fp32's of the same rounds
    timed: dict[SpeedRun, tuple[Speed, Speed]] = {}
    for precision in wanted:
        t = time.perf_counter()
        builder = BUILDERS[precision]
        cand = builder.build(ctx)
        fid = cand.fidelity
        log.info("%s: %s", precision.value, fid.describe())
        timings[precision.value] = round(time.perf_counter() - t, 2)
        release()
        peaks.lap(precision.value)
        if not fid.passed and not (builder.lossy and allow_low_fidelity):
            why = f"missed its fidelity bar vs PyTorch: {fid.describe()}" + (
                "; pass --allow-low-fidelity to keep it anyway" if builder.lossy else ""
            )
            log.error("%s: %s; left out", precision.value, why)
            missed[precision.value] = why
            left_out.append(cand.path)
            continue
        path = out / VARIANT_FILES[precision]
        if cand.path != path:
            raise ExportError(f"internal: {precision.value} was written to {cand.path.name}, not {path.name}")
        sha = sha256_file(path)
        if written.setdefault(path, sha) != sha:
            raise ExportError(f"{precision.value}: {path.name} is already another variant's graph")
        variant = Variant(
            precision=precision,
            file=path.name,
            sha256=sha,
            size_bytes=path.stat().st_size,
            provider=VARIANT_PROVIDERS[precision],
            fidelity=fid,
            kept_float=cand.kept_float,
            ops=cand.ops,
            validated_on=cand.validated_on,
            validated_cpu=ValidatedCpu() if cand.on_gpu else _validated_cpu(ctx, cand),
            engine_properties=cand.engine_properties,
            int8_tensors=cand.int8_tensors,
            int8=cand.int8,
        )
        built[precision] = (variant, cand)
        _timed(ctx, builder, cand, timed, timings, peaks)
    for path in left_out:  # a left-out variant's file, unless a kept one shares it (bf16 and fp32)
        if path not in written:
            path.unlink(missing_ok=True)
    if ctx.fp32_path not in written:
        ctx.fp32_path.unlink(missing_ok=True)
    if not built:
        raise FidelityError("; ".join(f"{k} variant {why}" for k, why in missed.items()))

    speeds = anchored(timed)
    variants = {p.value: BUILDERS[p].settle(v, cand, speeds) for p, (v, cand) in built.items()}
    shutil.rmtree(ctx.work)
    peak = peaks.peak
    log.info(
        "peak memory of the export: %d MB (%s)",
        peak,
        ", ".join(f"{k} {v}" for k, v in peaks.stages.items()),
    )
    manifest = _manifest(src, ctx, variants, timings, t0, peaks)
    manifest.save(out)
    return manifest, missed


def _validated_cpu(ctx: Context, cand: Candidate) -> ValidatedCpu:
    cpu = ValidatedCpu.from_dict(ctx.cpu.to_dict())
    return cpu if cand.weights_fed is None else replace(cpu, int8_weights=cand.weights_fed)


def _timed(
    ctx: Context,
    builder: Builder,
    cand: Candidate,
    timed: dict[SpeedRun, tuple[Speed, Speed]],
    timings: dict[str, float],
    peaks: Peaks,
) -> None:
    """Time each of ``cand``'s runs against the fp32 baseline right after it was validated, one
    run at a time: its engine and a fp32 session are started, take turns (``speed.measure``) and
    are dropped. Adds (its record, fp32's record of those rounds) to ``timed``."""
    t = time.perf_counter()
    for run, start in builder.speed_runs(ctx, cand).items():
        with stage(f"speed: {run.label} vs fp32 on {ctx.cpu.cpu_class.value}"):
            measured = measure(
                {FP32: ctx.baseline(), run: start()},
                int(ctx.calib_tok.lengths.sum()),
                ctx.cpu.cpu_class.value,
            )
        timed[run] = (measured[run], measured[FP32])
        del measured
        release()
        peaks.lap(f"speed {run.label}")
    timings["speed"] = round(timings.get("speed", 0.0) + time.perf_counter() - t, 2)


def _manifest(
    src: Source,
    ctx: Context,
    variants: dict[str, Variant],
    timings: dict[str, float],
    t0: float,
    peaks: Peaks,
) -> Manifest:
    revision = src.revision or (src.path.name if src.model_id != str(src.path.resolve()) else None)
    rerank = {} if src.rerank is None else {"activation_from": src.rerank.activation_from}
    return Manifest(
        source={
            "model": src.model_id,
            "revision": revision,
            "model_type": src.model_type,
            "pooling_from": src.pooling_origin,
            "normalize_from": src.normalize_origin,
        }
        | rerank,
        pooling=src.pooling,
        normalize=src.normalize,
        max_length=src.max_length,
        dim=ctx.out_dim,
        tokenizer=ctx.tok_info,
        inputs=ctx.inputs,
        output=LOGITS if ctx.rerank else OUTPUT_NAME,
        variants=variants,
        export={
            "opset": graph.OPSET,
            "fusion": ctx.fusion,
            "graph_passes": ctx.passes,
            "tools": _tool_versions(),
            "probe_texts": len(ctx.reference),
            "stage_seconds": timings,
            # this process's peak resident memory (MB), in all and per stage (``export.memory``)
            "peak_rss_mb": peaks.peak,
            "stage_peak_rss_mb": dict(peaks.stages),
            "wall_seconds": round(time.perf_counter() - t0, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        prompts=src.prompts,
        default_prompt_name=src.default_prompt_name,
        similarity_fn_name=src.similarity_fn_name,
        truncate_dims=src.truncate_dims,
        task=src.task,
        rerank=src.rerank,
    )
