"""``dmeta-embed verify``: each variant of an exported folder against its source model on the
user's own texts (needs the export extra: the source model runs in torch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--texts", "texts_file", required=True, help="A file of texts, one per line ('-': standard input)."
)
@click.option(
    "--variants", default=None, help="Comma-separated variants to check (default: every one in the folder)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--trust-remote-code",
    is_flag=True,
    help="Let transformers run the source model's own code (as at export).",
)
def verify(
    folder: Path, texts_file: str, variants: str | None, as_json: bool, trust_remote_code: bool
) -> None:
    """Check each variant against the source model on your texts: min / p1 / mean cosine against
    its fidelity bar, and its worst texts. Exits 1 when a variant misses its bar on them."""
    from ..export.verify import read_texts, render, report
    from ..export.verify import verify as run_verify

    texts = read_texts(texts_file)
    names = [v.strip() for v in variants.split(",") if v.strip()] if variants else None
    checks = run_verify(folder, texts, names, trust_remote_code=trust_remote_code)
    if as_json:
        click.echo(json.dumps(report(checks, texts), indent=2, ensure_ascii=False))
    else:
        click.echo(render(checks, texts))
    if any(c.meets is False for c in checks):
        sys.exit(1)
