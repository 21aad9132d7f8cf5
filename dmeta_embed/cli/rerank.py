"""``dmeta-embed rerank``: documents (one per line) ranked against a query by an exported
cross-encoder, thin over :class:`~dmeta_embed.runtime.reranker.Reranker`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .options import provider_option, variant_option


def read_documents(path: str) -> list[str]:
    """One document per line (UTF-8; ``-``: standard input); blank lines are skipped."""
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise click.UsageError(f"{path}: cannot read the documents ({e})") from e
    return [line for line in raw.splitlines() if line.strip()]


@click.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--query", "-q", required=True, help="The query the documents are ranked against.")
@click.option(
    "--documents",
    "-d",
    default="-",
    show_default=True,
    help="File with one document per line, or - for stdin.",
)
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Show only the best N.")
@click.option("--raw-scores", is_flag=True, help="Rank by the raw logits, not the activated scores.")
@click.option("--json", "as_json", is_flag=True, help="Print the ranking as JSON.")
@variant_option
@provider_option
def rerank(
    folder: Path,
    query: str,
    documents: str,
    top_k: int | None,
    raw_scores: bool,
    as_json: bool,
    variant: str,
    provider: str,
) -> None:
    """Rank documents against a query with an exported cross-encoder FOLDER, best first."""
    from ..runtime.reranker import Reranker

    docs = read_documents(documents)
    reranker = Reranker.load(folder, variant=variant, provider=provider)
    ranked = reranker.rank(
        query, docs, top_k=top_k, return_documents=True, activation_fn="identity" if raw_scores else None
    )
    if as_json:
        click.echo(json.dumps(ranked, ensure_ascii=False, indent=2))
        return
    for place, row in enumerate(ranked, 1):
        text = row["text"] if len(row["text"]) <= 70 else row["text"][:67] + "..."
        click.echo(f"{place:3}  {row['score']:.6f}  [{row['corpus_id']}] {text}")
