"""The corpus job: the output folder (``_job.json``, parts, ``_SUCCESS``), embedding one part with
one :class:`~dmeta_embed.runtime.Embedder`, and the in-process run. Ray runs the same
:class:`PartWorker` inside its actors (``dmeta_embed.integrations.ray``).

Output folder::

    _job.json            the plan, written first: input files (size, mtime), columns, model, parts
    part-00000.parquet   written as .part-00000.parquet.<pid>-<rand>.tmp, fsync'ed, then renamed
    ...
    _SUCCESS             written last, once every part is there: counts, model, variant, timings

A rerun with the same plan keeps the parts whose footer has the planned row count and embeds the
rest; a different input, column or model is refused (``overwrite=True`` starts again).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..runtime import Embedder
from ..runtime.embedder import CHUNK
from . import CorpusError
from .progress import Progress
from .source import ROW_COLUMN, Part, file_fingerprint, scan

JOB_FILE = "_job.json"
SUCCESS_FILE = "_SUCCESS"
FORMAT = 1
#: key in each part's parquet footer: that part's counts, summed into _SUCCESS
META_KEY = b"dmeta_embed.part"
DEFAULT_PART_ROWS = 10_000


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to embed parts (plain data: it travels to Ray actors as a dict).
    ``variant`` and ``provider`` are concrete: decided once, by the driver, for every worker."""

    output: str
    model: str
    variant: str
    provider: str
    text_column: str
    id_column: str | None
    on_null: str

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


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _DropTruncationWarnings(logging.Filter):
    """encode() warns once per call about truncated texts; the job counts them and reports once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "were truncated" not in record.getMessage()


@contextlib.contextmanager
def _quiet_truncation() -> Iterator[None]:
    logger = logging.getLogger("dmeta_embed.runtime.embedder")
    f = _DropTruncationWarnings()
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)


class PartWorker:
    """Embeds and writes parts with one Embedder (in-process: the only one; on Ray: one per actor)."""

    def __init__(self, spec: JobSpec, threads: int | None = None, embedder: Embedder | None = None) -> None:
        self.spec = spec
        self.out = Path(spec.output)
        self.embedder = embedder or Embedder.load(
            spec.model, variant=spec.variant, provider=spec.provider, threads=threads
        )
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
        n, dim = len(texts), self.embedder.dim
        emb = np.empty((n, dim), dtype=np.float32)
        n_tokens = np.empty(n, dtype=np.int32)
        truncated = 0
        with _quiet_truncation():
            # the runtime's own chunk size: a part's rows are batched exactly as encode(part) would
            for s in range(0, n, CHUNK):
                chunk = texts[s : s + CHUNK]
                emb[s : s + len(chunk)] = self.embedder.encode(chunk)
                n_tokens[s : s + len(chunk)] = self.embedder.last_lengths  # tokenised once, by encode
                truncated += len(self.embedder.last_truncated)
                if on_rows:
                    on_rows(len(chunk))
        stats = {
            "part": part.index,
            "rows": n,
            "tokens": int(n_tokens.sum()),
            "truncated": truncated,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        table = pa.table(
            {
                self.spec.id_column or ROW_COLUMN: ids,
                "n_tokens": pa.array(n_tokens, type=pa.int32()),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(emb.reshape(-1), type=pa.float32()), dim
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


def _our_file(name: str) -> bool:
    return (
        name in (JOB_FILE, SUCCESS_FILE)
        or (name.startswith("part-") and name.endswith(".parquet"))
        or (name.startswith((".part-", f".{JOB_FILE}", f".{SUCCESS_FILE}")) and name.endswith(".tmp"))
    )


def prepare_output(out: Path, job: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Make ``out`` ready for ``job``; returns the _SUCCESS summary if that job is already complete."""
    if out.exists() and not out.is_dir():
        raise CorpusError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in out.iterdir()]
    foreign = [n for n in names if not _our_file(n)]
    if foreign:
        raise CorpusError(
            f"{out}: holds files that are not an embed-corpus output ({', '.join(sorted(foreign)[:3])}); "
            "choose an empty or new folder"
        )
    if overwrite:
        for n in names:
            (out / n).unlink()
        names = []
    if JOB_FILE in names:
        try:
            old = json.loads((out / JOB_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CorpusError(f"{out / JOB_FILE}: unreadable ({e}); pass --overwrite to start again") from e
        differ = [k for k, v in job["key"].items() if old.get("key", {}).get(k) != v]
        if differ:
            raise CorpusError(
                f"{out}: was started for a different job ({', '.join(differ)} changed); "
                "use a new OUTPUT or pass --overwrite to start again"
            )
        if SUCCESS_FILE in names:
            return json.loads((out / SUCCESS_FILE).read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    elif names:
        raise CorpusError(f"{out}: has parts but no {JOB_FILE}; pass --overwrite to start again")
    for n in names:  # leftovers of an interrupted write: never finished, never read
        if n.endswith(".tmp"):
            (out / n).unlink(missing_ok=True)
    _write_json(out / JOB_FILE, job)
    return None


def finished(out: Path, part: Part) -> dict[str, Any] | None:
    """A part's counts if its file is complete and has the planned rows; a bad one is removed."""
    path = out / part.name
    if not path.exists():
        return None
    stats = part_stats(path)
    if stats is None or stats["rows"] != part.rows:
        path.unlink()
        return None
    return stats


def embed_corpus(
    input: str | Path,
    output: str | Path,
    model: str | Path,
    *,
    text_column: str = "text",
    id_column: str | None = None,
    part_rows: int = DEFAULT_PART_ROWS,
    on_null: str = "error",
    variant: str = "auto",
    provider: str = "auto",
    threads: int | None = None,
    ray: bool | str = False,
    workers: int | None = None,
    worker_cpus: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Embed ``input``'s ``text_column`` into a folder of parquet parts at ``output`` and return the
    ``_SUCCESS`` summary. ``ray``: False runs in-process with ``threads``; True runs on Ray Data
    actors of ``worker_cpus`` CPUs each after ``ray.init()``, a string names the cluster
    (``"auto"``, ``"ray://head:10001"``, ``"local"``); see docs/corpus.md."""
    if part_rows < 1:
        raise CorpusError(f"part_rows must be at least 1, got {part_rows}")
    t0 = time.perf_counter()
    input, output = Path(input), Path(output)
    if ray:  # a missing extra is reported before anything is read or written
        from ..integrations.ray import run_parts
    plan = scan(input, text_column, id_column, part_rows, on_null)
    # in-process this is the worker's embedder; for Ray it only decides variant/provider once
    embedder = Embedder.load(model, variant=variant, provider=provider, threads=1 if ray else threads)
    spec = JobSpec(
        str(output.resolve()),
        str(Path(model).resolve()),
        *loaded_as(embedder),
        text_column,
        id_column,
        on_null,
    )
    m = embedder.manifest
    model_info = {
        "path": spec.model,
        "source": m.source.get("model"),
        "variant": spec.variant,
        "provider": spec.provider,
        "sha256": m.variants[spec.variant].sha256,
        "dim": m.dim,
        "max_length": m.max_length,
        "normalize": m.normalize,
    }
    key = {
        "files": [list(f) for f in file_fingerprint(plan.files)],
        "text_column": text_column,
        "id_column": id_column,
        "on_null": on_null,
        "part_rows": part_rows,
        "variant": spec.variant,
        "model_sha256": model_info["sha256"],
    }
    job = {
        "format": FORMAT,
        "key": key,
        "input": str(input.resolve()),
        "input_format": plan.fmt,
        "files": plan.files,
        "rows": plan.rows,
        "skipped_null": plan.skipped_null,
        "id_type": plan.id_type,
        "model": model_info,
        "parts": [p.to_dict() for p in plan.parts],
    }
    done_before = prepare_output(output, job, overwrite)
    if done_before is not None:
        if progress:
            print(
                f"embed-corpus: {output} is already complete ({done_before.get('rows_written')} rows)",
                file=sys.stderr,
            )
        return done_before
    pending = [p for p in plan.parts if finished(output, p) is None]
    rows_out = sum(p.rows for p in plan.parts)
    bar = Progress(
        rows_out,
        len(plan.parts),
        rows_out - sum(p.rows for p in pending),
        len(plan.parts) - len(pending),
        enabled=progress,
    )
    if plan.skipped_null and progress:
        bar.stream.write(
            f"embed-corpus: skipping {plan.skipped_null} row(s) whose {text_column!r} is null "
            f"(first: row {plan.first_skipped[0]})\n"
        )
    engine = "in-process"
    if pending and ray:
        del embedder  # the driver embeds nothing
        engine = run_parts(spec, pending, address=ray, workers=workers, worker_cpus=worker_cpus, progress=bar)
    elif pending:
        worker = PartWorker(spec, embedder=embedder)
        for part in pending:
            worker.run(part, on_rows=bar.add)
            bar.add(parts=1)
    bar.close()
    return _finish(output, job, plan.parts, engine, bar, time.perf_counter() - t0)


def _finish(
    out: Path, job: dict[str, Any], parts: list[Part], engine: str, bar: Progress, seconds: float
) -> dict[str, Any]:
    """Check every part, then write _SUCCESS: only now does the output look finished."""
    totals = {"rows": 0, "tokens": 0, "truncated": 0}
    for p in parts:
        stats = part_stats(out / p.name)
        if stats is None or stats["rows"] != p.rows:
            raise CorpusError(f"{out / p.name}: missing or incomplete after the run; rerun to finish it")
        for k in totals:
            totals[k] += stats[k]
    import importlib.metadata as md

    summary = {
        "format": FORMAT,
        "input": job["input"],
        "text_column": job["key"]["text_column"],
        "id_column": job["key"]["id_column"] or ROW_COLUMN,
        "rows_input": job["rows"],
        "rows_written": totals["rows"],
        "skipped_null": job["skipped_null"],
        "tokens": totals["tokens"],
        "truncated": totals["truncated"],
        "parts": len(parts),
        "model": job["model"],
        "engine": engine,
        "this_run": {"rows": bar.new_rows, "seconds": round(seconds, 2), "rows_per_s": round(bar.rate, 1)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {
            name: md.version(name) for name in ("dmeta-embed", "pyarrow", "onnxruntime") if _installed(name)
        },
    }
    _write_json(out / SUCCESS_FILE, summary)
    return summary


def _installed(name: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False
