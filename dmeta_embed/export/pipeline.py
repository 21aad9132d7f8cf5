"""``export_model``: a Hugging Face model → a validated folder of ONNX variants + manifest.json."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from .._optional import require_feature
from ..errors import ExportError, FidelityError, ModelLoadError
from ..manifest import (
    BARS,
    OUTPUT_NAME,
    VARIANT_FILES,
    VARIANT_PROVIDERS,
    Bar,
    Fidelity,
    Manifest,
    Pooling,
    Precision,
    Provider,
    TokenizerInfo,
    Variant,
    sha256_file,
)
from ..runtime.cpu import detect
from ..runtime.embedder import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS
from ..runtime.pipeline import embed_tokenized
from ..runtime.engines import cuda_available
from ..runtime.session import OnnxRuntimeRunner as Runner
from ..runtime.tokenize import TextTokenizer
from ..texts import calibration_texts, probe_texts
from . import graph, openvino
from . import variants as derive
from .progress import quiet_third_party, stage
from .reference import fidelity, torch_embeddings
from .source import DEFAULT_MODEL, Source, resolve

if TYPE_CHECKING:
    import onnx

    from ..runtime.tokenize import Tokenized

log = logging.getLogger(__name__)


def _require_export_deps() -> None:
    require_feature("export")


def _tool_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"dmeta-embed": __version__}
    for pkg in (
        "torch",
        "transformers",
        "onnx",
        "onnxruntime",
        "onnxruntime-gpu",
        "tokenizers",
        "nncf",
        "openvino",
    ):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _write_tokenizer(src: Source, folder: Path) -> TokenizerInfo:
    """Save the fast tokenizer (converted from vocab.txt when the model has no tokenizer.json)
    with truncation at max length and no padding (the runtime pads each batch)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(src.path, use_fast=True, trust_remote_code=src.trust_remote_code)
    except Exception as e:
        raise ModelLoadError(f"{src.model_id}: cannot load its tokenizer ({e})") from e
    if not tok.is_fast:
        raise ExportError(f"{src.model_id}: no fast tokenizer could be built from its files")
    backend = tok.backend_tokenizer
    backend.no_padding()
    backend.enable_truncation(src.max_length)
    backend.save(str(folder / "tokenizer.json"))
    if tok.padding_side != "right":
        log.warning("tokenizer pads on the %s; the runtime pads right", tok.padding_side)
    return TokenizerInfo(file="tokenizer.json", pad_token_id=int(tok.pad_token_id or 0))


def _prepare_output(output: Path, force: bool) -> None:
    if output.exists():
        if not force:
            raise ExportError(f"output folder {output} exists; pass --force to replace it")
        if output.is_dir() and not (output / "manifest.json").exists() and any(output.iterdir()):
            raise ExportError(f"{output} is a non-empty folder that is not an export; refusing to replace it")


def export_model(
    model: str = DEFAULT_MODEL,
    output: str | Path = "out/dmeta",
    *,
    variants: Iterable[str] = ("fp32", "fp16", "int8"),
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

    Every variant is validated with ONNX Runtime against the PyTorch reference on the built-in
    probe set; one that misses its bar raises :class:`FidelityError` (int8 only with
    ``allow_low_fidelity``). The folder is built beside ``output`` and moved into place at the
    end, so a failed or interrupted export leaves nothing behind.
    """
    t0 = time.perf_counter()
    _require_export_deps()
    wanted = [Precision(v) for v in variants]
    if not wanted:
        raise ExportError("no variants asked for")
    if Precision.INT8_OV in wanted:
        openvino.require()
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
        "exporting %s (%s, pooling=%s from %s, max_length=%d)",
        src.model_id,
        src.model_type,
        src.pooling.value,
        src.pooling_origin,
        src.max_length,
    )

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        with quiet_third_party():
            manifest = _build(src, staging, wanted, bars, allow_low_fidelity, t0)
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
        return manifest
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _build(
    src: Source,
    out: Path,
    wanted: list[Precision],
    bars: dict[Precision, Bar],
    allow_low_fidelity: bool,
    t0: float,
) -> Manifest:
    import onnx

    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 2)
        return now

    t = time.perf_counter()
    cpu = detect()
    log.info("export on %s", cpu.describe())
    tok_info = _write_tokenizer(src, out)
    tokenizer = TextTokenizer(out / "tokenizer.json", src.max_length)
    hidden = int(src.config["hidden_size"])
    heads = int(src.config["num_attention_heads"])

    probes = probe_texts(src.max_length)
    probe_tok = tokenizer.encode(probes)
    if not probe_tok.truncated:
        raise ExportError("internal: the probe set has no over-length text")
    with stage(f"reference: PyTorch embeddings of {len(probes)} probe texts"):
        reference = torch_embeddings(
            src.path,
            probes,
            src.pooling,
            src.normalize,
            src.max_length,
            trust_remote_code=src.trust_remote_code,
        )
    t = lap("reference", t)

    work = out / ".work"
    work.mkdir()
    with stage("export: TorchScript → ONNX"):
        graph.export_backbone(src.path, work / "raw.onnx", trust_remote_code=src.trust_remote_code)
    t = lap("torch_export", t)
    with stage("fuse: ONNX Runtime's BERT fusions and graph passes"):
        backbone, fusion = graph.fuse(work / "raw.onnx", heads, hidden)
        if not fusion.get("Attention"):
            log.warning(
                "ONNX Runtime did not fuse Attention for %s: the graph will be slower", src.model_type
            )
        passes = []
        if src.pooling == Pooling.CLS and graph.cls_only_last_layer(backbone):
            passes.append("cls_only_last_layer")
        # the CPU variants (fp32, int8) get SkipLayerNormalization unfused; fp16 (CUDA) keeps it
        cpu_backbone = onnx.ModelProto()
        cpu_backbone.CopyFrom(backbone)
        if graph.unfuse_skip_layernorm(cpu_backbone):
            passes.append("unfuse_skip_layernorm")
    t = lap("fuse", t)

    # int8 is validated as this CPU computes it exactly: s8 weights where the u8×s8 kernels are
    # exact, shifted to u8 where they saturate (runtime.cpu); the runtime feeds it the same way
    int8_weights = "u8" if cpu.int8_weights == "u8" else None

    def runner(
        model: onnx.ModelProto, provider: Provider = Provider.CPU, weights: str | None = None
    ) -> Runner:
        return Runner(model.SerializeToString(), provider, int8_weights=weights)

    def embed(
        model: onnx.ModelProto, tok=probe_tok, provider: Provider = Provider.CPU, weights: str | None = None
    ) -> np.ndarray:
        return embed_tokenized(
            runner(model, provider, weights),
            tok,
            pad_id=tok_info.pad_token_id,
            dim=hidden,
            max_batch_tokens=4096,
            batch_size=16,
        )

    def head(m: onnx.ModelProto) -> onnx.ModelProto:
        return graph.append_head(m, src.pooling, src.normalize, hidden)

    calib_tok = tokenizer.encode(calibration_texts())
    fp32_model = head(cpu_backbone)
    calib_ref: np.ndarray | None = None  # fp32 embeddings of the calibration texts, computed once

    def calibration_reference() -> np.ndarray:
        nonlocal calib_ref
        if calib_ref is None:
            calib_ref = embed(fp32_model, calib_tok)
        return calib_ref

    built: dict[str, Variant] = {}
    ov_bf16: Fidelity | None = None  # int8-ov's fidelity with bf16 float parts, where this CPU has bf16
    finals: dict[Precision, onnx.ModelProto] = {}
    max_tokens = int(probe_tok.lengths.max())
    for precision in wanted:
        kept: dict[str, str] = {}
        properties: dict[str, str] = {}
        validated_on = Provider.CPU.ort_name
        provider = Provider.CPU
        weights = None
        int8_tensors = 0
        if precision == Precision.FP32:
            final = fp32_model
        elif precision == Precision.FP16:
            final = head(derive.to_fp16(backbone))
            if cuda_available():  # validate where it will run when we can
                provider = Provider.CUDA
                validated_on = provider.ort_name
        elif precision == Precision.INT8:
            weights = int8_weights
            n = len(derive.quantizable_nodes(cpu_backbone))
            with stage(
                f"int8: dynamic int8 search over {n} nodes ({weights or 's8'} weights on {cpu.cpu_class.value})"
            ):
                result = derive.search_int8(
                    cpu_backbone,
                    lambda m, t=calib_tok, w=weights: embed(head(m), t, weights=w),
                    calibration_reference(),
                    bars[precision],
                )
            final, kept = head(result.model), result.kept_float
            int8_tensors = derive.check_int8_tensors(final)
        else:  # INT8_OV: from the raw export (OpenVINO fuses on its own and cannot run ORT's contrib ops)
            properties = openvino.cpu_properties()
            ov_embed = openvino.openvino_embedder(work, properties, tok_info.pad_token_id)
            with stage("int8-ov: NNCF static int8, searched through OpenVINO"):
                found = openvino.search(
                    head(onnx.load(str(work / "raw.onnx"))),
                    calib_tok,
                    ov_embed,
                    derive.target(bars[precision]),
                )
            final, kept, validated_on = found.model, found.unquantized, openvino.engine_version()
        with stage(f"{precision.value}: validation on {len(probes)} probe texts"):
            if precision == Precision.INT8_OV:
                vectors = ov_embed(final, probe_tok)
            else:
                vectors = embed(final, provider=provider, weights=weights)
        fid = fidelity(vectors, reference, bars[precision], max_tokens)
        log.info(
            "%s: min cos %.6f, mean cos %.6f (bar %.5f / %.5f)",
            precision.value,
            fid.min_cos,
            fid.mean_cos,
            fid.bar_min_cos,
            fid.bar_mean_cos,
        )
        int8 = precision in (Precision.INT8, Precision.INT8_OV)
        if not fid.passed and not (int8 and allow_low_fidelity):
            raise FidelityError(
                f"{precision.value} variant missed its fidelity bar vs PyTorch: min cos {fid.min_cos:.6f} "
                f"(bar {fid.bar_min_cos}), mean cos {fid.mean_cos:.6f} (bar {fid.bar_mean_cos})"
                + ("; pass --allow-low-fidelity to keep it anyway" if int8 else "")
            )
        if precision == Precision.INT8_OV and cpu.bf16:
            # bf16 for the float parts where this CPU computes bf16 natively: a candidate, kept
            # below only if it meets the bar and runs faster (docs/performance.md, "OpenVINO")
            with stage("int8-ov: validation with bf16 float parts"):
                bf16 = openvino.openvino_embedder(work, openvino.BF16, tok_info.pad_token_id)(
                    final, probe_tok
                )
            ov_bf16 = fidelity(bf16, reference, bars[precision], max_tokens)
            log.info("int8-ov, bf16: min cos %.6f, mean cos %.6f", ov_bf16.min_cos, ov_bf16.mean_cos)
        path = out / VARIANT_FILES[precision]
        onnx.save(final, str(path))
        finals[precision] = final
        built[precision.value] = Variant(
            precision=precision,
            file=path.name,
            sha256=sha256_file(path),
            size_bytes=path.stat().st_size,
            provider=VARIANT_PROVIDERS[precision].ort_name,
            fidelity=fid,
            kept_float=kept,
            ops=graph.op_counts(final),
            validated_on=validated_on,
            validated_cpu=cpu.to_dict() if provider != Provider.CUDA else {},
            engine_properties=properties,
            int8_tensors=int8_tensors,
        )
        t = lap(precision.value, t)

    cpu_variants = [p for p in (Precision.INT8, Precision.INT8_OV) if p in finals]
    if cpu_variants:
        alternative = openvino.BF16 if ov_bf16 is not None and ov_bf16.passed else None
        with stage(f"speed: {', '.join(p.value for p in cpu_variants)} vs fp32 on {cpu.cpu_class.value}"):
            speeds = _speeds(
                fp32_model,
                finals,
                calib_tok,
                cpu.cpu_class.value,
                runner,
                int8_weights,
                lambda m, props: openvino.compile_runner(work, m, props),
                tok_info.pad_token_id,
                hidden,
                ov_alternative=alternative,
            )
        for p, sp in speeds.items():
            if isinstance(p, Precision) and p.value in built:
                built[p.value] = dataclasses.replace(built[p.value], speed=sp)
        bf16_speed = speeds.get(BF16_RUN)
        if bf16_speed is not None and ov_bf16 is not None:
            f32_rate = speeds[Precision.INT8_OV]["tokens_per_s"]
            if bf16_speed["tokens_per_s"] > f32_rate:
                built[Precision.INT8_OV.value] = dataclasses.replace(
                    built[Precision.INT8_OV.value],
                    engine_properties=openvino.BF16,
                    fidelity=ov_bf16,
                    speed={**bf16_speed, "f32_tokens_per_s": f32_rate},
                )
            else:
                built[Precision.INT8_OV.value] = dataclasses.replace(
                    built[Precision.INT8_OV.value],
                    speed={**speeds[Precision.INT8_OV], "bf16_tokens_per_s": bf16_speed["tokens_per_s"]},
                )
            log.info(
                "int8-ov: bf16 float parts %d tokens/s vs f32 %d: keeping %s",
                bf16_speed["tokens_per_s"],
                f32_rate,
                built[Precision.INT8_OV.value].engine_properties["INFERENCE_PRECISION_HINT"],
            )
        t = lap("speed", t)

    shutil.rmtree(work)
    revision = src.revision or (src.path.name if src.model_id != str(src.path.resolve()) else None)
    manifest = Manifest(
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
        dim=hidden,
        tokenizer=tok_info,
        inputs=graph.INPUTS,
        output=OUTPUT_NAME,
        variants=built,
        export={
            "opset": graph.OPSET,
            "fusion": fusion,
            "graph_passes": passes,
            "tools": _tool_versions(),
            "probe_texts": len(probes),
            "stage_seconds": timings,
            "wall_seconds": round(time.perf_counter() - t0, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        prompts=src.prompts,
        default_prompt_name=src.default_prompt_name,
        similarity_fn_name=src.similarity_fn_name,
        truncate_dims=src.truncate_dims,
    )
    manifest.save(out)
    return manifest


#: ``_speeds``' key for int8-ov run with bf16 float parts
BF16_RUN = "int8-ov+bf16"


def _speeds(
    fp32: onnx.ModelProto,
    finals: dict[Precision, onnx.ModelProto],
    tok: Tokenized,
    cpu_class: str,
    runner,
    int8_weights: str | None,
    ov_compile,
    pad_id: int,
    dim: int,  # type: ignore[no-untyped-def]
    rounds: int = 3,
    ov_alternative: dict[str, str] | None = None,
) -> dict[Precision | str, dict[str, Any]]:
    """Tokens/s of fp32 and each CPU variant on the calibration texts, batched as the runtime
    batches, on this machine: what ``auto`` needs to never pick a variant slower than fp32 here.
    The variants take turns (``rounds`` passes each) and keep their fastest, so a burst of other
    work on the machine slows one pass, not one variant. ``ov_alternative``: int8-ov's other
    engine properties to time too (bf16), under the key :data:`BF16_RUN`."""
    tokens = int(tok.lengths.sum())

    def batches(r):  # type: ignore[no-untyped-def]
        return lambda: embed_tokenized(
            r,
            tok,
            pad_id=pad_id,
            dim=dim,
            max_batch_tokens=DEFAULT_BATCH_TOKENS[Provider.CPU],
            batch_size=DEFAULT_BATCH_SIZE,
        )

    runs: dict[Precision | str, Any] = {Precision.FP32: batches(runner(fp32, Provider.CPU))}
    for p, model in finals.items():
        if p == Precision.INT8:
            runs[p] = batches(runner(model, Provider.CPU, int8_weights))
        elif p == Precision.INT8_OV:
            runs[p] = batches(ov_compile(model, openvino.cpu_properties()))
            if ov_alternative:
                runs[BF16_RUN] = batches(ov_compile(model, ov_alternative))
    reps = {}
    for p, run in runs.items():  # warm-up (weight packing, first-shape compiles), then size a pass
        run()
        t0 = time.perf_counter()
        run()
        reps[p] = max(1, round(0.05 / max(time.perf_counter() - t0, 1e-6)))  # tiny models: >= 50 ms a pass
    best = {p: float("inf") for p in runs}
    for _ in range(rounds):
        for p, run in runs.items():
            t0 = time.perf_counter()
            for _ in range(reps[p]):
                run()
            best[p] = min(best[p], (time.perf_counter() - t0) / reps[p])
    base = tokens / best[Precision.FP32]
    out: dict[Precision | str, dict[str, Any]] = {}
    for p, seconds in best.items():
        rate = tokens / seconds
        out[p] = {
            "cpu_class": cpu_class,
            "tokens_per_s": round(rate),
            "vs_fp32": round(rate / base, 3),
            "engine": "openvino" if p in (Precision.INT8_OV, BF16_RUN) else "onnxruntime",
        }
        if p != Precision.FP32:
            name = p.value if isinstance(p, Precision) else p
            log.info("%s: %.0f tokens/s, %.2fx fp32 (%.0f) on %s", name, rate, rate / base, base, cpu_class)
    return out
