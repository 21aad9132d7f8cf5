"""The corpus job: plan, the output folder (``_job.json``, parts, ``_SUCCESS``), resume. The
pending parts go to an executor (``corpus.executors.InProcess`` or ``corpus.ray.RayExecutor``),
which runs ``corpus.worker.PartWorker`` on each.

Output folder::

    _job.json            the plan, written first: input files (size, mtime), columns, model, parts
    part-00000.parquet   written as .part-00000.parquet.<pid>-<rand>.tmp, fsync'ed, then renamed
    ...
    _SUCCESS             written last, once every part is there: counts, model, variant, timings

A rerun with the same plan keeps the parts whose footer has the planned row count and embeds the
rest; a different input, column or model is refused (``overwrite=True`` starts again).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .._optional import installed_version
from ..runtime.plan import Profile, make_plan, resolve
from .errors import CorpusError
from .executors import Executor, InProcess
from .progress import Progress
from .source import ROW_COLUMN, Part, file_fingerprint, scan
from .worker import JobSpec, part_stats

JOB_FILE = "_job.json"
SUCCESS_FILE = "_SUCCESS"
FORMAT = 1
DEFAULT_PART_ROWS = 10_000


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
    executor: Executor
    if ray:  # a missing extra is reported before anything is read or written
        from .ray import RayExecutor

        executor = RayExecutor(address=ray, workers=workers, worker_cpus=worker_cpus)
    plan = scan(input, text_column, id_column, part_rows, on_null)
    # the load plan is made once, here, for every worker (the driver embeds nothing): where auto
    # chose CUDA, resolve() sees that it starts, so no worker is told CUDA where it cannot run
    load = resolve(make_plan(Path(model).resolve(), variant, provider, Profile.BULK, threads=threads))
    m = load.manifest
    spec = JobSpec(str(output.resolve()), load.to_dict(), text_column, id_column, on_null)
    if not ray:  # loaded before any output is written: a folder it cannot load changes nothing
        executor = InProcess(spec, threads=threads)
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
    engine = executor.run(spec, pending, bar) if pending else executor.name
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
            name: v
            for name in ("dmeta-embed", "pyarrow", "onnxruntime", "openvino")
            if (v := installed_version(name)) is not None
        },
    }
    _write_json(out / SUCCESS_FILE, summary)
    return summary
