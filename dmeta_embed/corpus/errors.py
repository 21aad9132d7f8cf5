"""The corpus job's error. Standard library only."""

from __future__ import annotations

from ..errors import DmetaEmbedError


class CorpusError(DmetaEmbedError):
    """Bad corpus input, or an output folder that belongs to another job; the message names the
    file, row and column."""
