"""Reading a corpus (a parquet file, a folder of parquet files, or JSON lines): one validating scan
that plans the parts, and the reader of one part.

A part is a row range of one input file; parts never span files. The scan runs before anything is
written, so bad input fails with one line naming the file, row (and JSON line) and column.
pyarrow is imported by the caller (``dmeta_embed.corpus.job``) through ``require``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import CorpusError

#: the id column written when the input has none: the row's 0-based position in the input
ROW_COLUMN = "row"
RESERVED = ("n_tokens", "embedding")
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_SCAN_BATCH = 65_536


@dataclass(frozen=True)
class Part:
    """Rows ``[start, stop)`` of one input file; ``rows``: how many it writes (nulls skipped)."""

    index: int
    file: str
    fmt: str  # "parquet" | "jsonl"
    start: int
    stop: int
    row_base: int  # input row index of the file's first row
    rows: int
    offset: int = 0  # jsonl: byte offset of row ``start``
    line: int = 0  # jsonl: 1-based line number of row ``start``

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}.parquet"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Part:
        return cls(**d)


@dataclass
class Scan:
    """What the validating scan learnt: files (with size and mtime, to notice a changed input),
    the id column's type, rows, skipped null rows and the part plan."""

    files: list[dict[str, Any]]
    fmt: str
    id_type: str
    rows: int
    parts: list[Part]
    skipped_null: int = 0
    first_skipped: list[int] = field(default_factory=list)


def input_files(path: Path) -> tuple[str, list[Path]]:
    """(format, files) of INPUT: a ``.parquet``/``.pq`` file, a ``.jsonl``/``.ndjson`` file, or a
    folder of parquet files (names starting with ``_`` or ``.`` ignored, as Spark and pyarrow do)."""
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in PARQUET_SUFFIXES and not p.name.startswith(("_", "."))
        )
        if not files:
            raise CorpusError(f"{path}: folder has no .parquet files")
        return "parquet", files
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet", [path]
    if suffix in JSONL_SUFFIXES:
        return "jsonl", [path]
    raise CorpusError(
        f"{path}: unknown input format {suffix or '(no extension)'!r}; "
        "give a .parquet or .jsonl file, or a folder of .parquet files"
    )


def _is_text(t: pa.DataType) -> bool:
    is_view = getattr(pa.types, "is_string_view", lambda _: False)
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or is_view(t))


def _is_id(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or _is_text(t))


def _open_parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise CorpusError(f"{path}: cannot read it as parquet ({e})") from e


class _Scanner:
    """Accumulates ids, null rows and parts file by file."""

    def __init__(self, text_column: str, id_column: str | None, part_rows: int, on_null: str) -> None:
        self.text_column, self.id_column = text_column, id_column
        self.part_rows, self.on_null = part_rows, on_null
        self.ids: list[pa.Array] = []
        self.id_type: pa.DataType | None = None
        self.nulls: list[int] = []  # input rows whose text is null
        self.where: dict[int, str] = {}  # row → "file:line" for jsonl rows named in errors
        self.parts: list[Part] = []
        self.rows = 0

    def null_text(self, row: int, at: str) -> None:
        if self.on_null == "error":
            raise CorpusError(
                f"{at}: column {self.text_column!r} is null or missing in row {row}"
                " (pass --on-null skip to leave such rows out)"
            )
        self.nulls.append(row)

    def add_ids(self, arr: pa.Array, file: Path) -> None:
        if self.id_column is None:
            return
        if self.id_type is not None and arr.type != self.id_type:
            raise CorpusError(
                f"{file}: column {self.id_column!r} is {arr.type}, but earlier files have {self.id_type}"
            )
        self.id_type = arr.type
        if arr.null_count:
            first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise CorpusError(
                f"{self.where_of(self.rows + first, file)}: column {self.id_column!r} is null "
                f"in row {self.rows + first}"
            )
        self.ids.append(arr)

    def where_of(self, row: int, file: Path) -> str:
        return self.where.get(row, str(file))

    def plan_file(self, file: Path, fmt: str, n: int, offsets: list[tuple[int, int]] | None = None) -> None:
        nulls = np.asarray(self.nulls, dtype=np.int64)
        for k, start in enumerate(range(0, n, self.part_rows)):
            stop = min(start + self.part_rows, n)
            lo, hi = self.rows + start, self.rows + stop
            skipped = int(np.count_nonzero((nulls >= lo) & (nulls < hi)))
            off, line = offsets[k] if offsets else (0, 0)
            self.parts.append(
                Part(
                    len(self.parts), str(file), fmt, start, stop, self.rows, stop - start - skipped, off, line
                )
            )
        self.rows += n

    def check_duplicates(self) -> None:
        if self.id_column is None or not self.ids:
            return
        ids = pa.chunked_array(self.ids, type=self.id_type).combine_chunks()
        counts = pc.value_counts(ids)
        dup = pc.filter(counts, pc.greater(counts.field("counts"), 1))
        if len(dup):
            value = dup.field("values")[0]
            rows = np.flatnonzero(pc.equal(ids, value).to_numpy(zero_copy_only=False))[:2]
            raise CorpusError(
                f"column {self.id_column!r} has duplicate id {value.as_py()!r} "
                f"(rows {rows[0]} and {rows[1]}; {len(dup)} duplicated value(s) in all)"
            )


def scan(path: Path, text_column: str, id_column: str | None, part_rows: int, on_null: str = "error") -> Scan:
    """Validate INPUT and plan its parts. Raises :class:`CorpusError` for a missing column, a
    non-text value, a null text (unless ``on_null='skip'``), a null or duplicate id, an unreadable or
    empty file."""
    if on_null not in ("error", "skip"):
        raise CorpusError(f"on_null must be 'error' or 'skip', got {on_null!r}")
    if id_column in RESERVED or (id_column is None and text_column in RESERVED):
        raise CorpusError(f"column names {', '.join(RESERVED)} are the output's own; rename the id column")
    fmt, files = input_files(path)
    sc = _Scanner(text_column, id_column, part_rows, on_null)
    described = []
    for file in files:
        st = file.stat()
        before = sc.rows
        if fmt == "parquet":
            _scan_parquet(sc, file)
        else:
            _scan_jsonl(sc, file)
        described.append(
            {
                "path": str(file.resolve()),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "rows": sc.rows - before,
            }
        )
    if sc.rows == 0:
        raise CorpusError(f"{path}: no rows")
    if sc.rows == len(sc.nulls):
        raise CorpusError(f"{path}: every row's {text_column!r} is null; nothing to embed")
    sc.check_duplicates()
    id_type = str(sc.id_type) if id_column else "int64"
    return Scan(described, fmt, id_type, sc.rows, sc.parts, len(sc.nulls), sc.nulls[:5])


def _scan_parquet(sc: _Scanner, file: Path) -> None:
    pf = _open_parquet(file)
    schema = pf.schema_arrow
    for col, check, what in (
        (sc.text_column, _is_text, "text (string)"),
        (sc.id_column, _is_id, "integer or string"),
    ):
        if col is None:
            continue
        if col not in schema.names:
            raise CorpusError(f"{file}: column {col!r} not found (columns: {', '.join(schema.names)})")
        t = schema.field(col).type
        if not check(t):
            raise CorpusError(f"{file}: column {col!r} is {t}, expected {what}")
    columns = [c for c in dict.fromkeys([sc.text_column, sc.id_column]) if c is not None]
    n = 0
    try:
        for batch in pf.iter_batches(batch_size=_SCAN_BATCH, columns=columns):
            text = batch.column(sc.text_column)
            if text.null_count:
                for i in np.flatnonzero(text.is_null().to_numpy(zero_copy_only=False)):
                    sc.null_text(sc.rows + n + int(i), str(file))
            if sc.id_column is not None:
                sc.add_ids(batch.column(sc.id_column), file)
            n += batch.num_rows
    except (OSError, pa.ArrowException) as e:
        raise CorpusError(f"{file}: cannot read it as parquet ({e})") from e
    sc.plan_file(file, "parquet", n)


def _jsonl_rows(file: Path, offset: int = 0, line: int = 1) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(byte offset, line number, object) of each non-blank line; bad JSON raises CorpusError."""
    try:
        with open(file, "rb") as f:
            f.seek(offset)
            for raw in f:
                if raw.strip():
                    try:
                        obj = json.loads(raw)
                    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
                        raise CorpusError(f"{file}:{line}: not valid JSON ({e})") from e
                    if not isinstance(obj, dict):
                        raise CorpusError(f"{file}:{line}: expected a JSON object, got {type(obj).__name__}")
                    yield offset, line, obj
                offset += len(raw)
                line += 1
    except OSError as e:
        raise CorpusError(f"{file}: cannot read it ({e})") from e


def _json_id(value: object, at: str, column: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        what = "null" if value is None else type(value).__name__
        raise CorpusError(f"{at}: column {column!r} is {what}, expected an integer or a string")
    return value


def _scan_jsonl(sc: _Scanner, file: Path) -> None:
    offsets: list[tuple[int, int]] = []
    ids: list[int | str] = []
    n = 0
    for offset, line, obj in _jsonl_rows(file):
        at = f"{file}:{line}"
        if n == 0:
            for col in (sc.text_column, sc.id_column):
                if col is not None and col not in obj:
                    raise CorpusError(
                        f"{at}: column {col!r} not found (first row has: {', '.join(obj) or 'nothing'})"
                    )
        if n % sc.part_rows == 0:
            offsets.append((offset, line))
        text = obj.get(sc.text_column)
        if text is None:
            sc.where[sc.rows + n] = at
            sc.null_text(sc.rows + n, at)
        elif not isinstance(text, str):
            raise CorpusError(
                f"{at}: column {sc.text_column!r} is {type(text).__name__}, expected a string (row {sc.rows + n})"
            )
        if sc.id_column is not None:
            value = _json_id(obj.get(sc.id_column), at, sc.id_column)
            if ids and type(value) is not type(ids[0]):
                raise CorpusError(f"{at}: column {sc.id_column!r} mixes integers and strings")
            ids.append(value)
        n += 1
    if ids:
        sc.add_ids(pa.array(ids, type=pa.int64() if isinstance(ids[0], int) else pa.string()), file)
    sc.plan_file(file, "jsonl", n, offsets)


def read_part(
    part: Part, text_column: str, id_column: str | None, on_null: str
) -> tuple[pa.Array, list[str]]:
    """(ids, texts) of one part, in input order, null texts left out when ``on_null='skip'``.
    Raises :class:`CorpusError` if the file no longer matches the plan."""
    want = part.stop - part.start
    if part.fmt == "parquet":
        ids, texts = _read_parquet_rows(part, text_column, id_column)
    else:
        ids, texts = _read_jsonl_rows(part, text_column, id_column, want)
    if len(texts) != want:
        raise CorpusError(
            f"{part.file}: has changed since the job was planned (expected {want} rows "
            f"from row {part.start}, read {len(texts)})"
        )
    if id_column is None:
        ids = pa.array(np.arange(part.row_base + part.start, part.row_base + part.stop, dtype=np.int64))
    keep = [t is not None for t in texts]
    if not all(keep):
        if on_null != "skip":
            first = keep.index(False)
            raise CorpusError(
                f"{part.file}: column {text_column!r} is null in row {part.row_base + part.start + first}"
            )
        ids = ids.filter(pa.array(keep))
        texts = [t for t in texts if t is not None]
    if len(texts) != part.rows or not all(isinstance(t, str) for t in texts):
        raise CorpusError(
            f"{part.file}: has changed since the job was planned (rows {part.start}–{part.stop})"
        )
    return ids, texts


def _read_parquet_rows(part: Part, text_column: str, id_column: str | None) -> tuple[pa.Array, list[Any]]:
    pf = _open_parquet(Path(part.file))
    columns = [c for c in dict.fromkeys([text_column, id_column]) if c is not None]
    batches, pos = [], 0
    # stream the row groups that overlap [start, stop): memory stays one batch per group, not the file
    for g in range(pf.metadata.num_row_groups):
        size = pf.metadata.row_group(g).num_rows
        if pos + size > part.start and pos < part.stop:
            for batch in pf.iter_batches(batch_size=8192, row_groups=[g], columns=columns):
                lo, hi = max(part.start - pos, 0), min(part.stop - pos, batch.num_rows)
                if hi > lo:
                    batches.append(batch.slice(lo, hi - lo))
                pos += batch.num_rows
        else:
            pos += size
        if pos >= part.stop:
            break
    if not batches:
        return pa.array([]), []
    table = pa.Table.from_batches(batches)
    ids = table.column(id_column).combine_chunks() if id_column else pa.array([])
    return ids, table.column(text_column).to_pylist()


def _read_jsonl_rows(
    part: Part, text_column: str, id_column: str | None, want: int
) -> tuple[pa.Array, list[Any]]:
    ids: list[Any] = []
    texts: list[Any] = []
    for _, _, obj in _jsonl_rows(Path(part.file), part.offset, part.line):
        if len(texts) == want:
            break
        texts.append(obj.get(text_column))
        if id_column is not None:
            ids.append(obj.get(id_column))
    if id_column is None:
        return pa.array([]), texts
    kind = pa.int64() if ids and isinstance(ids[0], int) else pa.string()
    try:
        return pa.array(ids, type=kind), texts
    except (pa.ArrowException, TypeError) as e:
        raise CorpusError(f"{part.file}: has changed since the job was planned ({e})") from e


def file_fingerprint(files: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """What must not change between a job's runs: each file's path, size and mtime."""
    return [(f["path"], f["size"], f["mtime_ns"]) for f in files]
