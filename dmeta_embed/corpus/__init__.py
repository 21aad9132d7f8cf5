"""``dmeta-embed embed-corpus``: embed a parquet / JSON-lines corpus into a folder of parquet parts
that a rerun resumes (docs/corpus.md).

``job`` plans, resumes and writes ``_SUCCESS``; an executor embeds the pending parts
(``executors.InProcess``, or ``ray.RayExecutor`` on Ray Data actors), each part with
``worker.PartWorker``. Importing this package is free; pyarrow loads on first use.
"""

from __future__ import annotations

from typing import Any

from .errors import CorpusError


def __getattr__(name: str) -> Any:
    if name == "embed_corpus":
        from .._optional import require_feature

        require_feature("corpus")
        from .job import embed_corpus

        return embed_corpus
    raise AttributeError(name)


__all__ = ["CorpusError", "embed_corpus"]
