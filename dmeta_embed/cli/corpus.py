"""``dmeta-embed embed-corpus``: a parquet / JSON-lines corpus → a folder of parquet parts."""

from __future__ import annotations

from pathlib import Path

import click

from .options import model_option, number_option, provider_option, ray_option, variant_option


@click.command("embed-corpus")
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
@number_option("--part-rows", "Rows per output part: the unit of resume and of Ray work.", default=10_000)
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
@number_option("--threads", "In-process onnxruntime threads.")
@ray_option("Run on Ray Data")
@number_option("--workers", "Ray: actors (default: as many as fit, one CPU left for reading).")
@number_option("--worker-cpus", "Ray: CPUs (= onnxruntime threads) per actor.", default=1)
@click.option("--quiet", "-q", is_flag=True, help="No progress line.")
def embed_corpus(
    input_path: Path,
    output: Path,
    model: str,
    revision: str | None,
    cache_dir: Path | None,
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
    from ..cache import resolve_model
    from ..corpus import embed_corpus as run

    done = run(
        input_path,
        output,
        resolve_model(model, revision, cache_dir),  # exported here once: Ray workers get the folder
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
