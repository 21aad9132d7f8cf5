"""``dmeta-embed encode`` and ``similarity``: texts → vectors (JSON lines or .npy), and the model
card's ranking."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..runtime.quantize import PRECISIONS
from .options import load, model_option, provider_option, variant_option


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


@click.command()
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
@click.option(
    "--prompt-name", default=None, help="One of the model's named prompts (default: its default prompt)."
)
@click.option(
    "--dimensions", type=click.IntRange(min=1), default=None, help="A Matryoshka dim the export lists."
)
@click.option(
    "--precision",
    type=click.Choice(list(PRECISIONS)),
    default="float32",
    show_default=True,
    help="Quantized output as sentence-transformers' quantize_embeddings (docs/serving.md).",
)
@variant_option
@provider_option
def encode(
    model: str,
    revision: str | None,
    cache_dir: Path | None,
    texts: tuple[str, ...],
    input_file: str | None,
    input_format: str,
    fmt: str,
    output: Path | None,
    batch_size: int | None,
    prompt_name: str | None,
    dimensions: int | None,
    precision: str,
    variant: str,
    provider: str,
) -> None:
    """Embed TEXTs (or --input lines) and write them as JSON lines or a .npy array."""
    import numpy as np

    items = _read_inputs(texts, input_file, input_format)
    if fmt == "npy" and output is None:
        raise click.UsageError("--format npy needs --output FILE")
    embedder = load(model, variant, provider, revision=revision, cache_dir=cache_dir)
    emb = embedder.encode(
        items,
        batch_size=batch_size,
        show_progress_bar=len(items) > 1000,
        prompt_name=prompt_name,
        truncate_dim=dimensions,
        precision=precision,
    )
    if fmt == "npy":
        assert output is not None
        np.save(output, emb)
        click.echo(f"wrote {emb.shape[0]}×{emb.shape[1]} {emb.dtype} to {output}", err=True)
        return
    as_json = (
        (lambda row: [round(float(x), 7) for x in row]) if emb.dtype == np.float32 else np.ndarray.tolist
    )
    out = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        for i, row in enumerate(emb):
            out.write(json.dumps({"index": i, "embedding": as_json(row)}) + "\n")
    finally:
        if output:
            out.close()


@click.command()
@model_option
@click.argument("queries", nargs=-1, required=True)
@click.option("--docs", "-d", multiple=True, required=True, help="A document to rank (repeat the option).")
@variant_option
@provider_option
def similarity(
    model: str,
    revision: str | None,
    cache_dir: Path | None,
    queries: tuple[str, ...],
    docs: tuple[str, ...],
    variant: str,
    provider: str,
) -> None:
    """For each QUERY, print --docs ranked by cosine similarity (Dmeta's model-card example)."""
    embedder = load(model, variant, provider, revision=revision, cache_dir=cache_dir)
    q = embedder.encode(list(queries), normalize_embeddings=True)
    d = embedder.encode(list(docs), normalize_embeddings=True)
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
