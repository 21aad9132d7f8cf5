"""Command line: export, encode, similarity, rerank, inspect, verify, serve (a thin wrapper over
``dmeta_embed.serve``), embed-corpus. ``bench`` only points to the repository's harness (``python -m benchmarks``), which is
not installed. One module per command (``cli.export``, ``cli.encode``, ``cli.info``, ``cli.server``,
``cli.corpus``), shared options in ``cli.options``.

Heavy imports happen inside commands so ``dmeta-embed --help`` stays fast. Library errors
(:class:`DmetaEmbedError`) become one clean ``Error:`` line and exit status 1.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from ..errors import DmetaEmbedError
from . import corpus, encode, export, info, rerank, server, verify
from .encode import format_ranking
from .info import summary

__all__ = ["cli", "format_ranking", "main", "summary"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="dmeta-embed")
def cli(verbose: int) -> None:
    """Fast, validated ONNX sentence embeddings for Dmeta-embedding and BERT-style models."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dmeta_embed").setLevel(level)


for command in (
    export.export,
    encode.encode,
    encode.similarity,
    rerank.rerank,
    info.inspect,
    server.serve,
    server.bench,
    corpus.embed_corpus,
    verify.verify,
):
    cli.add_command(command)


def main() -> None:
    """The ``dmeta-embed`` command."""
    run(cli)


def run(command: click.Command, **kwargs: Any) -> None:
    """Run a click command; library errors become one ``Error:`` line, never a traceback (the
    benchmark's command line runs through this too)."""
    try:
        command(standalone_mode=False, **kwargs)
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
