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
from collections.abc import Callable, Iterable
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
    Provider,
    Variant,
    sha256_file,
)
from ..variant_records import Speed, ValidatedCpu
from . import graph
from .builders import BUILDERS, Candidate, default_variants
from .context import Context, prepare
from .progress import quiet_third_party, stage
from .source import DEFAULT_MODEL, Source, resolve
from .speed import FP32, SpeedRun, calibration_pass, measure

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
) -> Manifest:
    """Export ``model`` (hub id or local folder) into ``output``; return the written manifest.

    ``variants`` None: every variant the runtime's ``auto`` can choose whose engine is installed
    here (int8-ov with the ``export-openvino`` extra). Every variant is validated against the
    PyTorch reference on the built-in probe set. One that misses its bar (int8 kinds: unless
    ``allow_low_fidelity``) is left out: the others are written and then
    :class:`VariantsLeftOutError` names what was left out; when none met its bar,
    :class:`FidelityError` and nothing is written. The folder is built beside ``output`` and moved
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
    )
    log.info(
        "exporting %s (%s, pooling=%s from %s, max_length=%d): %s",
        src.model_id,
        src.model_type,
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
    (name → why). Raises :class:`FidelityError` when none met its bar."""
    import onnx

    timings: dict[str, float] = {}
    ctx = prepare(src, out, bars, timings)
    built: dict[Precision, tuple[Variant, Candidate]] = {}
    written: dict[Path, onnx.ModelProto] = {}
    missed: dict[str, str] = {}
    for precision in wanted:
        t = time.perf_counter()
        builder = BUILDERS[precision]
        cand = builder.build(ctx)
        fid = cand.fidelity
        log.info(
            "%s: min cos %.6f, mean cos %.6f (bar %.5f / %.5f)",
            precision.value,
            fid.min_cos,
            fid.mean_cos,
            fid.bar_min_cos,
            fid.bar_mean_cos,
        )
        timings[precision.value] = round(time.perf_counter() - t, 2)
        if not fid.passed and not (builder.lossy and allow_low_fidelity):
            why = (
                f"missed its fidelity bar vs PyTorch: min cos {fid.min_cos:.6f} (bar {fid.bar_min_cos}), "
                f"mean cos {fid.mean_cos:.6f} (bar {fid.bar_mean_cos})"
                + ("; pass --allow-low-fidelity to keep it anyway" if builder.lossy else "")
            )
            log.error("%s: %s; left out", precision.value, why)
            missed[precision.value] = why
            continue
        path = out / VARIANT_FILES[precision]
        if path in written and written[path] is not cand.model:
            raise ExportError(f"{precision.value}: {path.name} is already another variant's graph")
        if path not in written:  # bf16 runs fp32's graph: one file, written once
            onnx.save(cand.model, str(path))
            written[path] = cand.model
        variant = Variant(
            precision=precision,
            file=path.name,
            sha256=sha256_file(path),
            size_bytes=path.stat().st_size,
            provider=VARIANT_PROVIDERS[precision],
            fidelity=fid,
            kept_float=cand.kept_float,
            ops=graph.op_counts(cand.model),
            validated_on=cand.validated_on,
            validated_cpu=ValidatedCpu() if cand.on_gpu else _validated_cpu(ctx, cand),
            engine_properties=cand.engine_properties,
            int8_tensors=cand.int8_tensors,
            int8=cand.int8,
        )
        built[precision] = (variant, cand)
    if not built:
        raise FidelityError("; ".join(f"{k} variant {why}" for k, why in missed.items()))

    variants = _timed(ctx, built, timings)
    shutil.rmtree(ctx.work)
    manifest = _manifest(src, ctx, variants, timings, t0)
    manifest.save(out)
    return manifest, missed


def _validated_cpu(ctx: Context, cand: Candidate) -> ValidatedCpu:
    cpu = ValidatedCpu.from_dict(ctx.cpu.to_dict())
    return cpu if cand.weights_fed is None else replace(cpu, int8_weights=cand.weights_fed)


def _timed(
    ctx: Context, built: dict[Precision, tuple[Variant, Candidate]], timings: dict[str, float]
) -> dict[str, Variant]:
    """Each built variant's manifest entry once the speed runs (fp32 vs every timed variant on
    this machine) are in."""
    runs: dict[SpeedRun, Callable[[], object]] = {}
    for precision, (_, cand) in built.items():
        runs.update(BUILDERS[precision].speed_runs(ctx, cand))
    speeds: dict[SpeedRun, Speed] = {}
    if runs:
        t = time.perf_counter()
        baseline = calibration_pass(ctx, ctx.runner(ctx.fp32_model), Provider.CPU)
        runs = {FP32: baseline} | runs
        labels = ", ".join(r.label for r in runs if r != FP32)
        with stage(f"speed: {labels} vs fp32 on {ctx.cpu.cpu_class.value}"):
            speeds = measure(runs, int(ctx.calib_tok.lengths.sum()), ctx.cpu.cpu_class.value)
        timings["speed"] = round(time.perf_counter() - t, 2)
    return {p.value: BUILDERS[p].settle(v, cand, speeds) for p, (v, cand) in built.items()}


def _manifest(
    src: Source, ctx: Context, variants: dict[str, Variant], timings: dict[str, float], t0: float
) -> Manifest:
    revision = src.revision or (src.path.name if src.model_id != str(src.path.resolve()) else None)
    return Manifest(
        source={
            "model": src.model_id,
            "revision": revision,
            "model_type": src.model_type,
            "pooling_from": src.pooling_origin,
            "normalize_from": src.normalize_origin,
        },
        pooling=src.pooling,
        normalize=src.normalize,
        max_length=src.max_length,
        dim=ctx.hidden,
        tokenizer=ctx.tok_info,
        inputs=graph.INPUTS,
        output=OUTPUT_NAME,
        variants=variants,
        export={
            "opset": graph.OPSET,
            "fusion": ctx.fusion,
            "graph_passes": ctx.passes,
            "tools": _tool_versions(),
            "probe_texts": len(ctx.reference),
            "stage_seconds": timings,
            "wall_seconds": round(time.perf_counter() - t0, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        prompts=src.prompts,
        default_prompt_name=src.default_prompt_name,
        similarity_fn_name=src.similarity_fn_name,
        truncate_dims=src.truncate_dims,
    )
