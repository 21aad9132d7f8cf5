"""Command line: export, encode, similarity, inspect, serve (a thin wrapper over ``dmeta_embed.serve``).
``bench`` only points to the repository's harness (``python -m benchmarks``), which is not installed.

Heavy imports happen inside commands so ``dmeta-embed --help`` stays fast. Library errors
(:class:`DmetaEmbedError`) become one clean ``Error:`` line and exit status 1.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from .errors import DmetaEmbedError
from .manifest import Precision, Variant
from .serve.config import ServerConfig  # a plain dataclass: imports nothing of the server stack

MODEL_ENV = "DMETA_EMBED_MODEL"
model_option = click.option(
    "--model",
    "-m",
    "model_dir",
    envvar=MODEL_ENV,
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Exported model folder (env {MODEL_ENV}).",
)
VARIANTS = [p.value for p in Precision]
variant_option = click.option(
    "--variant",
    type=click.Choice(["auto", *VARIANTS]),
    default="auto",
    show_default=True,
    envvar="DMETA_EMBED_VARIANT",
)
provider_option = click.option(
    "--provider",
    type=click.Choice(["auto", "cpu", "cuda", "openvino"]),
    default="auto",
    show_default=True,
    envvar="DMETA_EMBED_PROVIDER",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="dmeta-embed")
def cli(verbose: int) -> None:
    """Fast, validated ONNX sentence embeddings for Dmeta-embedding and BERT-style models."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dmeta_embed").setLevel(level)


def _load(model_dir: Path, variant: str, provider: str, **kw: object):  # type: ignore[no-untyped-def]
    from .runtime import Embedder

    return Embedder.load(model_dir, variant=variant, provider=provider, **kw)


@cli.command()
@click.argument("model", default="DMetaSoul/Dmeta-embedding")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Folder to create.")
@click.option(
    "--variants",
    default="fp32,fp16,int8",
    show_default=True,
    help="Comma-separated: fp32, fp16, int8, int8-ov (needs the export-openvino extra).",
)
@click.option(
    "--pooling",
    type=click.Choice(["cls", "mean", "last"]),
    default=None,
    help="Used only when the model has no 1_Pooling/config.json (default then: cls).",
)
@click.option("--max-length", type=int, default=None, help="Override the model's max sequence length.")
@click.option("--no-normalize", is_flag=True, help="Do not L2-normalise inside the graph.")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--allow-low-fidelity", is_flag=True, help="Keep an int8 variant that misses its bar.")
@click.option(
    "--trust-remote-code", is_flag=True, help="Run the model repository's own Python code (off by default)."
)
@click.option(
    "--truncate-dims",
    default="",
    metavar="D1,D2,...",
    help="Matryoshka dims the model was trained for: encode(truncate_dim=...) accepts only these.",
)
def export(
    model: str,
    output: Path,
    variants: str,
    pooling: str | None,
    max_length: int | None,
    no_normalize: bool,
    revision: str | None,
    force: bool,
    allow_low_fidelity: bool,
    trust_remote_code: bool,
    truncate_dims: str,
) -> None:
    """Export MODEL (hub id or local folder) to a validated folder of ONNX variants."""
    from .export import export_model

    logging.getLogger("dmeta_embed").setLevel(min(logging.getLogger("dmeta_embed").level, logging.INFO))
    names = [v.strip() for v in variants.split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        raise click.BadParameter(
            f"unknown variant(s) {bad}; choose from {', '.join(VARIANTS)}", param_hint="--variants"
        )
    manifest = export_model(
        model,
        output,
        variants=names,
        pooling=pooling,
        max_length=max_length,
        normalize=False if no_normalize else None,
        revision=revision,
        force=force,
        allow_low_fidelity=allow_low_fidelity,
        trust_remote_code=trust_remote_code,
        truncate_dims=_int_list(truncate_dims, "--truncate-dims"),
    )
    click.echo(f"exported {manifest.source['model']} → {output}")
    click.echo(summary(output))


def _int_list(value: str, hint: str) -> list[int]:
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError as e:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint=hint) from e


def _read_inputs(texts: tuple[str, ...], input_file: str | None, input_format: str) -> list[str]:
    if texts and input_file:
        raise click.UsageError("give TEXT arguments or --input, not both")
    if not input_file:
        if not texts:
            raise click.UsageError("nothing to encode: give TEXT arguments or --input FILE (- for stdin)")
        return list(texts)
    stream = sys.stdin if input_file == "-" else open(input_file, encoding="utf-8")  # noqa: SIM115
    with stream:
        lines = stream.read().splitlines()
    fmt = input_format
    if fmt == "auto":
        fmt = "jsonl" if input_file.endswith(".jsonl") else "text"
    if fmt == "text":
        return lines
    out = []
    for n, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
            out.append(obj["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise click.UsageError(
                f"{input_file}:{n}: expected a JSON object with a 'text' field ({e})"
            ) from e
    return out


@cli.command()
@model_option
@click.argument("texts", nargs=-1)
@click.option(
    "--input", "-i", "input_file", default=None, help="File with one text per line, or - for stdin."
)
@click.option(
    "--input-format",
    type=click.Choice(["auto", "text", "jsonl"]),
    default="auto",
    show_default=True,
    help="auto: .jsonl files are JSON lines with a 'text' field, anything else one text per line.",
)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "npy"]), default="jsonl", show_default=True)
@click.option(
    "--output",
    "-o",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file (default stdout; required for npy).",
)
@click.option("--batch-size", type=int, default=None)
@variant_option
@provider_option
def encode(
    model_dir: Path,
    texts: tuple[str, ...],
    input_file: str | None,
    input_format: str,
    fmt: str,
    output: Path | None,
    batch_size: int | None,
    variant: str,
    provider: str,
) -> None:
    """Embed TEXTs (or --input lines) and write them as JSON lines or a .npy array."""
    import numpy as np

    items = _read_inputs(texts, input_file, input_format)
    if fmt == "npy" and output is None:
        raise click.UsageError("--format npy needs --output FILE")
    model = _load(model_dir, variant, provider)
    emb = model.encode(items, batch_size=batch_size, show_progress_bar=len(items) > 1000)
    if fmt == "npy":
        assert output is not None
        np.save(output, emb)
        click.echo(f"wrote {emb.shape[0]}×{emb.shape[1]} float32 to {output}", err=True)
        return
    out = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        for i, row in enumerate(emb):
            out.write(json.dumps({"index": i, "embedding": [round(float(x), 7) for x in row]}) + "\n")
    finally:
        if output:
            out.close()


@cli.command()
@model_option
@click.argument("queries", nargs=-1, required=True)
@click.option("--docs", "-d", multiple=True, required=True, help="A document to rank (repeat the option).")
@variant_option
@provider_option
def similarity(
    model_dir: Path, queries: tuple[str, ...], docs: tuple[str, ...], variant: str, provider: str
) -> None:
    """For each QUERY, print --docs ranked by cosine similarity (Dmeta's model-card example)."""
    model = _load(model_dir, variant, provider)
    q = model.encode(list(queries), normalize_embeddings=True)
    d = model.encode(list(docs), normalize_embeddings=True)
    click.echo(format_ranking(list(queries), list(docs), q @ d.T))


def format_ranking(queries: list[str], docs: list[str], scores) -> str:  # type: ignore[no-untyped-def]
    """The model card's output: 查询文本 then 相似文本/打分 lines, best first."""
    lines = []
    for i, query in enumerate(queries):
        lines.append(f"查询文本：{query}")
        for j in sorted(range(len(docs)), key=lambda j: -float(scores[i][j])):
            lines.append(f"相似文本：{docs[j]}，打分：{float(scores[i][j])}")
        lines.append("")
    return "\n".join(lines)


def summary(folder: Path) -> str:
    """A readable summary of an export folder's manifest."""
    from .manifest import Manifest
    from .runtime.cpu import detect

    m = Manifest.load(folder)
    src = m.source
    out = [
        f"model     {src.get('model')}" + (f" @ {src['revision']}" if src.get("revision") else ""),
        f"type      {src.get('model_type')}  dim {m.dim}  max_length {m.max_length}",
        f"pooling   {m.pooling.value} (from {src.get('pooling_from')})  normalize {m.normalize}",
        "fusion    " + ", ".join(f"{k} {v}" for k, v in m.export.get("fusion", {}).items()),
        "passes    " + (", ".join(m.export.get("graph_passes") or []) or "none"),
        f"exported  {m.export.get('created')} in {m.export.get('wall_seconds')} s, opset {m.export.get('opset')}",
        "",
        f"{'variant':8} {'file':19} {'size MB':>8} {'min cos':>10} {'mean cos':>10} {'bar (min/mean)':>16}  ok  "
        "kept float  validated on          speed vs fp32",
    ]
    for name, v in m.variants.items():
        f = v.fidelity
        out.append(
            f"{name:8} {v.file:19} {v.size_bytes / 1e6:8.1f} {f.min_cos:10.6f} {f.mean_cos:10.6f} "
            f"{f.bar_min_cos:>7}/{f.bar_mean_cos:<8}  {'yes' if f.passed else 'NO ':3} {len(v.kept_float):10}  "
            f"{_validated(v):24}  {_speed(v)}"
        )
    # this machine, not the folder: the choice depends on its CPU class and installed providers
    cpu = detect()
    out += ["", f"this cpu  {cpu.describe()}"]
    try:
        from .runtime.choice import choose
        from .runtime.embedder import installed

        choice = choose(m, cpu=cpu, installed=installed())
        out.append(f"auto      {choice.variant.value} on {choice.provider.value}: {choice.reason}")
    except DmetaEmbedError as e:  # no onnxruntime here, or no variant this machine can run
        out.append(f"auto      cannot load here: {e}")
    return "\n".join(out)


def _validated(v: Variant) -> str:
    """``int8 on avx2 (u8)``-style: the engine, the CPU class and the int8 weight format (int8-ov:
    the float parts' precision)."""
    cpu = v.validated_cpu
    engine = v.validated_on.replace("ExecutionProvider", "")
    if not cpu:
        return engine
    weights = f", {cpu['int8_weights']}" if v.precision == Precision.INT8 and cpu.get("int8_weights") else ""
    if v.engine_properties.get("INFERENCE_PRECISION_HINT"):
        weights = f", {v.engine_properties['INFERENCE_PRECISION_HINT']}"
    return f"{engine} on {cpu.get('cpu_class')}{weights}"


def _speed(v: Variant) -> str:
    sp = v.speed
    return f"{sp['vs_fp32']:.2f}x on {sp['cpu_class']}" if sp.get("vs_fp32") else "-"


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the raw manifest.")
def inspect(folder: Path, as_json: bool) -> None:
    """Summarise an exported folder: variants, sizes, fidelity."""
    if as_json:
        from .manifest import Manifest

        click.echo(json.dumps(Manifest.load(folder).to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(summary(folder))


def server_option(flag: str, field: str, text: str, kind: click.ParamType | None = None):  # type: ignore[no-untyped-def]
    """An option for one ``ServerConfig`` field, with the dataclass's default (one source of truth)."""
    return click.option(
        flag,
        field,
        type=kind or click.IntRange(min=1),
        default=getattr(ServerConfig(), field),
        show_default=True,
        help=text,
    )


@cli.command()
@model_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="DMETA_EMBED_HOST",
    help="Address to bind; 0.0.0.0 exposes the server to the network.",
)
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), envvar="DMETA_EMBED_PORT"
)
@variant_option
@provider_option
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="onnxruntime threads (default: CPUs available).",
)
@click.option(
    "--max-batch-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Padded tokens per inference batch (default: the runtime's for the provider).",
)
@server_option("--batch-size", "batch_size", "Inputs per inference batch; 1 turns dynamic batching off.")
@server_option(
    "--max-wait-ms",
    "max_wait_ms",
    "How long a request may wait for others to share its batch.",
    click.FloatRange(min=0),
)
@server_option(
    "--max-queue", "max_queue", "Inputs allowed to wait; beyond it requests get 503 with Retry-After."
)
@server_option("--max-inputs", "max_inputs", "Inputs allowed in one request.")
@server_option("--max-chars", "max_chars", "Characters allowed in one input.")
@server_option(
    "--request-timeout",
    "request_timeout_s",
    "Seconds a request may wait in the queue and inference before it gets 503.",
    click.FloatRange(min=0.001),
)
@click.option(
    "--api-key-env",
    default=None,
    metavar="NAME",
    help="Require 'Authorization: Bearer <key>', the key read from environment variable NAME.",
)
@click.option(
    "--model-name", default=None, help="Name reported as 'model' (default: the export's source model)."
)
@click.option(
    "--spin/--no-spin",
    default=True,
    show_default=True,
    help="Let onnxruntime threads busy-wait between ops: faster on cores the server has to itself; "
    "use --no-spin when other busy processes share them.",
)
def serve(
    model_dir: Path,
    host: str,
    port: int,
    variant: str,
    provider: str,
    threads: int | None,
    max_batch_tokens: int | None,
    batch_size: int,
    max_wait_ms: float,
    max_queue: int,
    max_inputs: int,
    max_chars: int,
    request_timeout_s: float,
    api_key_env: str | None,
    model_name: str | None,
    spin: bool,
) -> None:
    """Serve the model over HTTP: OpenAI /v1/embeddings, TEI /embed, /health, /ready, /info, /metrics."""
    import os

    from .serve import serve as run_server

    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env, "")
        if not api_key:
            raise click.UsageError(
                f"--api-key-env {api_key_env}: that environment variable is not set or empty"
            )
    config = ServerConfig(
        max_wait_ms=max_wait_ms,
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
        max_queue=max_queue,
        max_inputs=max_inputs,
        max_chars=max_chars,
        request_timeout_s=request_timeout_s,
        api_key=api_key,
        model_name=model_name,
        spin=spin,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        click.echo(f"warning: serving on {host} without an API key (see --api-key-env)", err=True)
    run_server(model_dir, config, host=host, port=port, variant=variant, provider=provider, threads=threads)


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True}, add_help_option=False
)
def bench() -> None:
    """Benchmarks run from a source checkout: python -m benchmarks (see docs/performance.md)."""
    # the harness is not part of the package (it would install a top-level `benchmarks` module and
    # import the CLI back); this stub only says where it lives
    raise click.ClickException(
        "the benchmark runs from a source checkout of dmeta-embed: "
        "python -m benchmarks --help (see docs/performance.md)"
    )


@cli.command("embed-corpus")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(file_okay=False, path_type=Path))
@model_option
@click.option("--column", "text_column", default="text", show_default=True, help="Column with the texts.")
@click.option(
    "--id-column",
    default=None,
    help="Column of unique ids to write beside each vector "
    "(default: a 'row' column with the input row index).",
)
@click.option(
    "--part-rows",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Rows per output part: the unit of resume and of Ray work.",
)
@click.option(
    "--on-null",
    type=click.Choice(["error", "skip"]),
    default="error",
    show_default=True,
    help="A null or missing text: stop with an error, or leave the row out (counted).",
)
@click.option("--overwrite", is_flag=True, help="Discard OUTPUT's parts and start again.")
@variant_option
@provider_option
@click.option("--threads", type=click.IntRange(min=1), default=None, help="In-process onnxruntime threads.")
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ADDRESS]",
    help="Run on Ray Data: alone for ray.init() (RAY_ADDRESS or a local cluster), or an address "
    "(auto, ray://head:10001). Put it last or write --ray=ADDRESS.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Ray: actors (default: as many as fit, one CPU left for reading).",
)
@click.option(
    "--worker-cpus",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Ray: CPUs (= onnxruntime threads) per actor.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress line.")
def embed_corpus(
    input_path: Path,
    output: Path,
    model_dir: Path,
    text_column: str,
    id_column: str | None,
    part_rows: int,
    on_null: str,
    overwrite: bool,
    variant: str,
    provider: str,
    threads: int | None,
    ray_address: str | None,
    workers: int | None,
    worker_cpus: int,
    quiet: bool,
) -> None:
    """Embed a parquet / JSON-lines corpus into OUTPUT, a folder of parquet parts (id, n_tokens,
    embedding) that a rerun resumes (docs/corpus.md)."""
    from .corpus import embed_corpus as run

    done = run(
        input_path,
        output,
        model_dir,
        text_column=text_column,
        id_column=id_column,
        part_rows=part_rows,
        on_null=on_null,
        variant=variant,
        provider=provider,
        threads=threads,
        ray=False if ray_address is None else (ray_address or True),
        workers=workers,
        worker_cpus=worker_cpus,
        progress=not quiet,
        overwrite=overwrite,
    )
    click.echo(
        f"wrote {done['rows_written']:,} rows in {done['parts']} part(s) to {output} "
        f"({done['model']['variant']}, {done['skipped_null']} skipped null)",
        err=True,
    )


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except DmetaEmbedError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
