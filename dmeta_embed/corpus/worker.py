"""One part of a corpus job: read its rows, embed them with one ``Embedder``, write the part file
atomically with its counts in the footer. The same :class:`PartWorker` runs in-process and inside
each Ray actor (``corpus.executors``, ``corpus.ray``); :class:`JobSpec` is what it is told.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..runtime import Embedder
from ..runtime.plan import LoadPlan
from .errors import CorpusError
from .source import ROW_COLUMN, Part

#: key in each part's parquet footer: that part's counts, summed into _SUCCESS
META_KEY = b"dmeta_embed.part"


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to embed parts (plain data: it travels to Ray actors as a dict).
    ``plan``: the driver's load plan (``LoadPlan.to_dict``), decided once for every worker; each
    worker makes it again by name for its own machine (``LoadPlan.from_dict``)."""

    output: str
    plan: dict[str, Any]
    text_column: str
    id_column: str | None
    on_null: str

    @property
    def model(self) -> str:
        return str(self.plan["folder"])

    @property
    def variant(self) -> str:
        return str(self.plan["variant"])

    @property
    def provider(self) -> str:
        return str(self.plan["provider"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        return cls(**d)


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` so that ``path`` either does not exist or is complete: a hidden
    tmp name (readers skip names starting with '.'), fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class PartWorker:
    """Embeds and writes parts with one Embedder (in-process: the only one; on Ray: one per actor)."""

    def __init__(self, spec: JobSpec, threads: int | None = None, embedder: Embedder | None = None) -> None:
        self.spec = spec
        self.out = Path(spec.output)
        # the driver's plan, made again by name on this machine (bulk: OpenVINO in streams)
        self.embedder = embedder or Embedder(LoadPlan.from_dict(spec.plan, threads=threads))
        got = loaded_as(self.embedder)
        if got != (spec.variant, spec.provider):
            raise CorpusError(
                f"worker loaded {got[0]} on {got[1]}, the job uses {spec.variant} on {spec.provider}"
            )

    def run(self, part: Part, on_rows: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Embed one part and write it atomically; returns its counts (also kept in its footer)."""
        from .source import read_part

        t0 = time.perf_counter()
        ids, texts = read_part(part, self.spec.text_column, self.spec.id_column, self.spec.on_null)
        # one call: the vectors encode(texts) gives, with this call's token counts and truncations
        res = self.embedder.embed(texts, progress=on_rows)
        n, dim = len(texts), self.embedder.dim
        n_tokens = res.lengths.astype(np.int32)
        stats = {
            "part": part.index,
            "rows": n,
            "tokens": res.tokens,
            "truncated": len(res.truncated),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        table = pa.table(
            {
                self.spec.id_column or ROW_COLUMN: ids,
                "n_tokens": pa.array(n_tokens, type=pa.int32()),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(res.vectors.reshape(-1), type=pa.float32()), dim
                ),
            }
        ).replace_schema_metadata({META_KEY: json.dumps(stats).encode()})
        write_part(table, self.out / part.name)
        return stats


def loaded_as(embedder: Embedder) -> tuple[str, str]:
    """(variant, provider) an Embedder resolved ``auto`` to, as plain strings."""
    return (
        str(getattr(embedder.variant, "value", embedder.variant)),
        str(getattr(embedder.provider, "value", embedder.provider)),
    )


def write_part(table: pa.Table, path: Path) -> None:
    """Write one finished part (a module function so tests can interrupt a job here)."""
    write_atomic(table, path)


def part_stats(path: Path) -> dict[str, Any] | None:
    """The counts in a finished part's footer, or None if it is missing or unreadable."""
    try:
        meta = pq.read_metadata(path)
        raw = (meta.metadata or {}).get(META_KEY)
        stats = json.loads(raw) if raw else None
    except (OSError, pa.ArrowException, ValueError):
        return None
    if stats is None or stats.get("rows") != meta.num_rows:
        return None
    return stats  # type: ignore[no-any-return]
