"""embed-corpus in-process: output schema and readers, parity with encode in input order, resume
after an interrupt, bad input, the CLI. Ray's run of the same parts: tests/test_corpus_ray.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip(
    "pyarrow", reason="the corpus extra is not installed: pip install 'dmeta-embed[corpus]'"
)
import pyarrow.parquet as pq  # noqa: E402

from dmeta_embed import Embedder  # noqa: E402
from dmeta_embed.corpus import CorpusError, embed_corpus  # noqa: E402
from dmeta_embed.corpus import job as job_mod  # noqa: E402
from dmeta_embed.corpus import worker as worker_mod  # noqa: E402

N = 230
PART = 64
WORDS = [
    "胡子长得太快怎么办？",
    "在香港哪里买手表好",
    "今天北京的天气怎么样？",
    "The quick brown fox.",
    "ONNX Runtime runs transformer models quickly.",
    "iPhone 15 Pro 的价格是 7999 元。",
    "😊",
    "深度学习",
]


def make_texts(n: int, seed: int) -> list[str]:
    """Short, medium and a few over-max-length texts, seeded."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice([1, 2, 4, 12, 60], size=n, p=[0.35, 0.3, 0.2, 0.1, 0.05])
    texts = ["".join(rng.choice(WORDS, size=k)) for k in sizes]
    for i in (7, n - 80):  # over max_length (1,024 tokens for the tiny model)
        texts[i] = "".join(WORDS) * 40
    return texts


@pytest.fixture(scope="module")
def corpus() -> tuple[list[int], list[str]]:
    """Ids that are not the row order (a permutation), texts of every length incl. truncated ones."""
    texts = make_texts(N, seed=3)
    ids = [int(i) for i in np.random.default_rng(0).permutation(N) * 7 + 1000]
    return ids, texts


@pytest.fixture(scope="module")
def parquet_in(corpus, tmp_path_factory) -> Path:
    ids, texts = corpus
    path = tmp_path_factory.mktemp("in") / "corpus.parquet"
    pq.write_table(
        pa.table({"id": pa.array(ids, pa.int64()), "body": texts, "other": list(range(N))}),
        path,
        row_group_size=50,
    )  # row groups that do not line up with the parts
    return path


@pytest.fixture(scope="module")
def emb(tiny_export) -> Embedder:
    return Embedder.load(tiny_export, variant="fp32", threads=1)


@pytest.fixture(scope="module")
def clean_run(parquet_in, tiny_export, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "out"
    embed_corpus(
        parquet_in,
        out,
        tiny_export,
        text_column="body",
        id_column="id",
        part_rows=PART,
        variant="fp32",
        threads=1,
        progress=False,
    )
    return out


def read(out: Path) -> pa.Table:
    return pq.read_table(out)


def test_output_schema_order_and_parity_with_encode(clean_run, corpus, emb):
    ids, texts = corpus
    t = read(clean_run)
    assert t.schema.names == ["id", "n_tokens", "embedding"]
    assert t.schema.field("id").type == pa.int64() and t.schema.field("n_tokens").type == pa.int32()
    assert t.schema.field("embedding").type == pa.list_(pa.float32(), emb.dim)  # fixed size
    # rows come back in the input's order (ids are a permutation, not sorted)
    assert t.column("id").to_pylist() == ids
    got = np.stack(t.column("embedding").to_numpy(zero_copy_only=False))
    assert got.shape == (N, emb.dim) and got.dtype == np.float32
    # a part is embedded exactly as encode(part's texts): bitwise equal for fp32, same threads
    per_part = np.concatenate([emb.encode(texts[s : s + PART]) for s in range(0, N, PART)])
    assert np.array_equal(got, per_part)
    # against one encode of everything only the batch composition differs
    np.testing.assert_allclose(got, emb.encode(texts), atol=1e-5)
    assert t.column("n_tokens").to_pylist() == emb.count_tokens(texts)
    assert max(t.column("n_tokens").to_pylist()) == emb.max_length  # some texts were truncated


def test_success_marker_and_counts(clean_run, corpus, emb):
    files = sorted(p.name for p in clean_run.iterdir())
    n_parts = math.ceil(N / PART)
    assert files == ["_SUCCESS", "_job.json", *[f"part-{i:05d}.parquet" for i in range(n_parts)]]
    s = json.loads((clean_run / "_SUCCESS").read_text())
    assert (s["rows_input"], s["rows_written"], s["parts"], s["skipped_null"]) == (N, N, n_parts, 0)
    assert s["tokens"] == sum(emb.count_tokens(corpus[1]))
    assert s["truncated"] == sum(1 for n in emb.count_tokens(corpus[1]) if n == emb.max_length) > 0
    assert s["model"]["variant"] == "fp32" and s["model"]["dim"] == emb.dim and s["engine"] == "in-process"
    assert s["this_run"]["rows"] == N and s["this_run"]["rows_per_s"] > 0


def test_readable_without_ray_by_pandas_and_duckdb(clean_run, corpus, emb):
    pd = pytest.importorskip("pandas")
    df = pd.read_parquet(clean_run)  # the folder: _SUCCESS and _job.json are skipped by name
    assert list(df["id"]) == corpus[0]
    assert np.array_equal(
        np.stack(df["embedding"].to_numpy()),
        np.stack(read(clean_run)["embedding"].to_numpy(zero_copy_only=False)),
    )
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(
        f"SELECT id, len(embedding) AS d, embedding[1] AS e1 FROM read_parquet('{clean_run}/*.parquet') "
        "ORDER BY id"
    ).fetchall()
    assert len(rows) == N and {r[1] for r in rows} == {emb.dim}
    first = np.stack(read(clean_run)["embedding"].to_numpy(zero_copy_only=False))[:, 0]
    by_id = dict(zip(corpus[0], first, strict=True))
    assert all(abs(r[2] - by_id[r[0]]) < 1e-7 for r in rows)


def test_jsonl_and_parquet_folder_give_the_same_rows(clean_run, corpus, tiny_export, tmp_path):
    ids, texts = corpus
    src = tmp_path / "c.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": i, "body": t}, ensure_ascii=False) + "\n" + ("\n" if k == 5 else "")
            for k, (i, t) in enumerate(zip(ids, texts, strict=True))
        ),
        encoding="utf-8",
    )
    embed_corpus(
        src,
        tmp_path / "o1",
        tiny_export,
        text_column="body",
        id_column="id",
        part_rows=PART,
        variant="fp32",
        threads=1,
        progress=False,
    )
    want = read(clean_run)
    assert read(tmp_path / "o1").equals(want)  # a blank line is not a row
    folder = tmp_path / "parts"
    folder.mkdir()
    for k, s in enumerate(range(0, N, 100)):  # 3 files; parts never span files
        pq.write_table(
            pa.table({"id": ids[s : s + 100], "body": texts[s : s + 100]}), folder / f"f{k}.parquet"
        )
    (folder / "_SUCCESS").write_text("")
    s = embed_corpus(
        folder,
        tmp_path / "o2",
        tiny_export,
        text_column="body",
        part_rows=PART,
        variant="fp32",
        threads=1,
        progress=False,
    )
    got = read(tmp_path / "o2")
    assert got.column("row").to_pylist() == list(range(N))  # no --id-column: the input row index
    sizes = [pq.read_metadata(tmp_path / "o2" / f"part-{i:05d}.parquet").num_rows for i in range(s["parts"])]
    assert sizes == [64, 36, 64, 36, 30]  # files of 100, 100, 30 rows; a part never spans two files
    emb32 = Embedder.load(tiny_export, variant="fp32", threads=1)
    np.testing.assert_allclose(
        np.stack(got["embedding"].to_numpy(zero_copy_only=False)), emb32.encode(texts), atol=1e-5
    )


def test_resume_after_interrupt_no_duplicates(
    clean_run, parquet_in, tiny_export, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    real = worker_mod.write_part
    calls: list[str] = []

    def failing(table, path):
        if len(calls) == 2:
            raise RuntimeError("injected failure after 2 parts")
        calls.append(path.name)
        real(table, path)

    monkeypatch.setattr(worker_mod, "write_part", failing)
    kw = dict(text_column="body", id_column="id", part_rows=PART, variant="fp32", threads=1)
    with pytest.raises(RuntimeError, match="injected"):
        embed_corpus(parquet_in, out, tiny_export, **kw)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["_job.json", "part-00000.parquet", "part-00001.parquet"]  # not finished, no tmp
    (out / ".part-00002.parquet.999-dead.tmp").write_bytes(b"PAR1 half a part")  # as a kill -9 leaves it
    monkeypatch.setattr(worker_mod, "write_part", lambda t, p: (calls.append(p.name), real(t, p)))
    calls.clear()
    summary = embed_corpus(parquet_in, out, tiny_export, progress=True, **kw)
    assert calls == ["part-00002.parquet", "part-00003.parquet"]  # only the missing parts
    assert "rows/s" in capsys.readouterr().err
    assert summary["this_run"]["rows"] == N - 2 * PART and summary["rows_written"] == N
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    got, want = read(out), read(clean_run)
    assert got.equals(want)  # row by row, in order, bitwise
    assert len(set(got.column("id").to_pylist())) == N  # no duplicates
    # a finished output is left alone; a damaged part is noticed and redone
    calls.clear()
    assert embed_corpus(parquet_in, out, tiny_export, progress=False, **kw)["rows_written"] == N and not calls
    (out / "_SUCCESS").unlink()
    (out / "part-00001.parquet").write_bytes(b"not parquet")
    embed_corpus(parquet_in, out, tiny_export, progress=False, **kw)
    assert calls == ["part-00001.parquet"] and read(out).equals(want)


def test_other_job_in_output_is_refused(clean_run, parquet_in, tiny_export, tmp_path):
    with pytest.raises(CorpusError, match=r"different job \(part_rows changed\)"):
        embed_corpus(
            parquet_in,
            clean_run,
            tiny_export,
            text_column="body",
            id_column="id",
            part_rows=PART + 1,
            variant="fp32",
            progress=False,
        )
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match="not an embed-corpus output"):
        embed_corpus(parquet_in, foreign, tiny_export, text_column="body", progress=False, overwrite=True)
    assert (foreign / "notes.txt").exists()


def test_int8_close_to_encode(parquet_in, corpus, tiny_export, tmp_path):
    """int8 is dynamically quantised per batch (scales from each batch's activations): equal to
    encode(part), and within the variant's own recorded fidelity bar of encode(all) and of fp32."""
    emb8 = Embedder.load(tiny_export, variant="int8", threads=1)
    embed_corpus(
        parquet_in,
        tmp_path / "o",
        tiny_export,
        text_column="body",
        id_column="id",
        part_rows=PART,
        variant="int8",
        threads=1,
        progress=False,
    )
    got = np.stack(read(tmp_path / "o")["embedding"].to_numpy(zero_copy_only=False))
    texts = corpus[1]
    assert np.array_equal(got, np.concatenate([emb8.encode(texts[s : s + PART]) for s in range(0, N, PART)]))
    bar = emb8.manifest.variants["int8"].fidelity
    for want in (emb8.encode(texts), Embedder.load(tiny_export, variant="fp32").encode(texts)):
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert cos.min() >= bar.bar_min_cos and cos.mean() >= bar.bar_mean_cos


# --- bad input: one error naming the file / row / column, nothing that looks finished -----------


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


BAD = {
    "missing column": (lambda d: _pq(d, {"id": [1, 2], "text": ["a", "b"]}), "column 'body' not found"),
    "non-text column": (
        lambda d: _pq(d, {"id": [1, 2], "body": [1, 2]}),
        "column 'body' is int64, expected text",
    ),
    "null text": (
        lambda d: _pq(d, {"id": [1, 2, 3], "body": ["a", None, "c"]}),
        "'body' is null or missing in row 1",
    ),
    "non-text value": (
        lambda d: _jsonl(d / "c.jsonl", [{"id": 1, "body": "a"}, {"id": 2, "body": 5}]),
        r"c.jsonl:2: column 'body' is int, expected a string \(row 1\)",
    ),
    "missing value": (
        lambda d: _jsonl(d / "c.jsonl", [{"id": 1, "body": "a"}, {"id": 2}]),
        r"c.jsonl:2: column 'body' is null or missing in row 1",
    ),
    "bad json": (
        lambda d: _jsonl(d / "c.jsonl", [{"id": 1, "body": "a"}, "{oops"]),
        r"c.jsonl:2: not valid JSON",
    ),
    "duplicate ids": (
        lambda d: _pq(d, {"id": ["x", "y", "x"], "body": ["a", "b", "c"]}),
        r"column 'id' has duplicate id 'x' \(rows 0 and 2",
    ),
    "null id": (lambda d: _pq(d, {"id": [1, None], "body": ["a", "b"]}), "column 'id' is null in row 1"),
    "mixed ids": (
        lambda d: _jsonl(d / "c.jsonl", [{"id": 1, "body": "a"}, {"id": "2", "body": "b"}]),
        "c.jsonl:2: column 'id' mixes integers and strings",
    ),
    "unreadable": (lambda d: _bytes(d / "c.parquet", b"this is not parquet"), "cannot read it as parquet"),
    "empty jsonl": (lambda d: _bytes(d / "c.jsonl", b""), "no rows"),
    "empty parquet": (
        lambda d: _pq(d, {"id": pa.array([], pa.int64()), "body": pa.array([], pa.string())}),
        "no rows",
    ),
    "unknown format": (lambda d: _bytes(d / "c.csv", b"id,body\n1,a\n"), "unknown input format '.csv'"),
    "empty folder": (lambda d: (d / "sub").mkdir() or d / "sub", "folder has no .parquet files"),
}


def _pq(d: Path, cols: dict) -> Path:
    pq.write_table(pa.table(cols), d / "c.parquet")
    return d / "c.parquet"


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_error_and_no_output(case, tiny_export, tmp_path):
    make, message = BAD[case]
    src = make(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(CorpusError, match=message):
        embed_corpus(
            src, out, tiny_export, text_column="body", id_column="id", variant="fp32", progress=False
        )
    assert not out.exists()  # input is checked before anything is written


def test_null_texts_skipped_with_a_count(tiny_export, tmp_path):
    src = _pq(tmp_path, {"id": [10, 11, 12, 13, 14], "body": ["a", None, "c", None, "e"]})
    s = embed_corpus(
        src,
        tmp_path / "o",
        tiny_export,
        text_column="body",
        id_column="id",
        part_rows=2,
        on_null="skip",
        variant="fp32",
        progress=False,
    )
    t = read(tmp_path / "o")
    assert t.column("id").to_pylist() == [10, 12, 14]
    assert (s["rows_input"], s["rows_written"], s["skipped_null"], s["parts"]) == (5, 3, 2, 3)
    e = Embedder.load(tiny_export, variant="fp32")
    np.testing.assert_allclose(
        np.stack(t["embedding"].to_numpy(zero_copy_only=False)), e.encode(["a", "c", "e"]), atol=1e-5
    )


# --- CLI ---------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dmeta_embed.cli", "embed-corpus", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_runs_and_reports_progress(parquet_in, clean_run, tiny_export, tmp_path):
    r = _cli(
        str(parquet_in),
        str(tmp_path / "o"),
        "--model",
        str(tiny_export),
        "--column",
        "body",
        "--id-column",
        "id",
        "--part-rows",
        str(PART),
        "--variant",
        "fp32",
        "--threads",
        "1",
    )
    assert r.returncode == 0, r.stderr
    assert "rows/s" in r.stderr and f"wrote {N} rows in 4 part(s)" in r.stderr
    assert read(tmp_path / "o").equals(read(clean_run))


def test_cli_bad_input_is_one_line(tiny_export, tmp_path):
    src = _pq(tmp_path, {"id": [1, 2], "body": ["a", None]})
    r = _cli(str(src), str(tmp_path / "o"), "-m", str(tiny_export), "--column", "body", "--id-column", "id")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"Error: {src}: column 'body' is null or missing in row 1 "
        "(pass --on-null skip to leave such rows out)"
    ]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("flag", "want"),
    [
        ([], False),
        (["--ray"], True),
        (["--ray=auto"], "auto"),
        (["--ray", "ray://head:10001"], "ray://head:10001"),
    ],
)
def test_cli_ray_flag(flag, want, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from dmeta_embed.cli import cli

    seen = {}

    def fake(*args, **kw):
        seen.update(kw)
        return {"rows_written": 1, "parts": 1, "model": {"variant": "fp32"}, "skipped_null": 0}

    monkeypatch.setattr(job_mod, "embed_corpus", fake)
    (tmp_path / "manifest.json").write_text("{}")  # --model is resolved first: an exported folder
    r = CliRunner().invoke(
        cli, ["embed-corpus", "in.parquet", str(tmp_path / "o"), "-m", str(tmp_path), *flag]
    )
    assert r.exit_code == 0, r.output
    assert seen["ray"] == want and seen["worker_cpus"] == 1


def test_light_import_and_missing_extras(parquet_in, tiny_export, tmp_path):
    """`import dmeta_embed.corpus` loads no pyarrow; a missing extra is one pip line, before any output."""
    code = f"""
import sys
import dmeta_embed.corpus, dmeta_embed.cli
assert "pyarrow" not in sys.modules and "ray" not in sys.modules
sys.modules["ray"] = None
from dmeta_embed.corpus import embed_corpus
from dmeta_embed.errors import MissingDependencyError
try:
    embed_corpus({str(parquet_in)!r}, {str(tmp_path / "o")!r}, {str(tiny_export)!r}, text_column="body", ray=True)
except MissingDependencyError as e:
    print(e)
sys.modules["pyarrow"] = None
del sys.modules["dmeta_embed.corpus.job"]
try:
    from dmeta_embed.corpus import embed_corpus
except MissingDependencyError as e:
    print(e)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "ray is not installed; run: pip install 'dmeta-embed[ray]'",
        "pyarrow is not installed; run: pip install 'dmeta-embed[corpus]'",
    ]
    assert not (tmp_path / "o").exists()
