"""``dmeta-embed embed-corpus``: embed a parquet / JSON-lines corpus into a folder of parquet parts
that a rerun resumes (docs/corpus.md). In-process by default; on Ray Data with
``dmeta_embed.integrations.ray``. Importing this package is free; pyarrow loads on first use.
"""

from __future__ import annotations

from typing import Any

from ..errors import DmetaEmbedError


class CorpusError(DmetaEmbedError):
    """Bad corpus input, or an output folder that belongs to another job; the message names the
    file, row and column."""


def __getattr__(name: str) -> Any:
    if name == "embed_corpus":
        from .._optional import require

        require("pyarrow", "corpus")
        from .job import embed_corpus

        return embed_corpus
    raise AttributeError(name)


__all__ = ["CorpusError", "embed_corpus"]
