"""embed-corpus --ray: the same parts on Ray Data actors of a local 2-CPU Ray. Row-by-row equal to
the in-process run, resumes an interrupted run without duplicates, clean errors, no processes left."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest

pa = pytest.importorskip(
    "pyarrow", reason="the corpus extra is not installed: pip install 'dmeta-embed[corpus]'"
)
ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'dmeta-embed[ray]'")
pytest.importorskip("ray.data", reason="the ray extra is not installed: pip install 'dmeta-embed[ray]'")
import pyarrow.parquet as pq  # noqa: E402

from dmeta_embed.corpus import CorpusError, embed_corpus  # noqa: E402
from dmeta_embed.corpus import worker as worker_mod  # noqa: E402
from dmeta_embed.corpus.ray import RayExecutor, actor_plan  # noqa: E402
from dmeta_embed.corpus.source import Part  # noqa: E402

N = 300
PART = 64
KW = dict(text_column="body", id_column="doc", part_rows=PART, variant="fp32", threads=1)


def test_actor_plan_leaves_a_cpu_for_reading(caplog):
    assert actor_plan(2, 1, None, 5) == (1, 1)  # the test cluster: one actor, one CPU free
    assert actor_plan(1, 1, None, 5) == (1, 1)  # a 1-CPU cluster still gets a worker
    assert actor_plan(16, 4, None, 100) == (3, 4)  # 15 spare CPUs / 4
    assert actor_plan(16, 1, None, 3) == (3, 1)  # never more actors than parts
    assert actor_plan(4, 8, None, 10) == (1, 3)  # an actor never asks for more than the spare CPUs
    with caplog.at_level(logging.WARNING):
        assert actor_plan(48, 4, 20, 100) == (11, 4)
    assert "only 11 actor(s)" in caplog.text


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU local Ray for this module; shut down after, and its processes checked gone."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    node = getattr(getattr(ray, "_private", None), "worker", None)
    node = getattr(getattr(node, "_global_node", None), "all_processes", {}) if node else {}
    procs = [p.process for infos in node.values() for p in infos if getattr(p, "process", None) is not None]
    yield
    ray.shutdown()
    deadline = time.time() + 10
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(0.2)
    assert all(p.poll() is not None for p in procs), "Ray processes left running after shutdown"


@pytest.fixture(scope="module")
def corpus_in(tmp_path_factory):
    rng = np.random.default_rng(1)
    words = [
        "胡子长得太快怎么办？",
        "在香港哪里买手表好",
        "The quick brown fox.",
        "深度学习",
        "iPhone 15 Pro 7999 元",
    ]
    texts = ["".join(rng.choice(words, size=k)) for k in rng.integers(1, 12, size=N)]
    ids = [f"doc-{i:04d}" for i in rng.permutation(N)]
    path = tmp_path_factory.mktemp("ray-in") / "c.parquet"
    pq.write_table(pa.table({"doc": ids, "body": texts}), path)
    return path, ids, texts


@pytest.fixture(scope="module")
def in_process(corpus_in, tiny_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray-ref") / "out"
    embed_corpus(corpus_in[0], out, tiny_export, progress=False, **KW)
    return pq.read_table(out)


def test_ray_equals_in_process_row_by_row(local_ray, corpus_in, in_process, tiny_export, tmp_path, capsys):
    s = embed_corpus(corpus_in[0], tmp_path / "out", tiny_export, ray=True, **KW)
    assert s["engine"].startswith(f"ray {ray.__version__}: 1 actor(s) x 1 CPU of 2")
    assert "rows/s" in capsys.readouterr().err
    got = pq.read_table(tmp_path / "out")
    assert got.column("doc").to_pylist() == corpus_in[1]  # the input's order
    assert got.column("n_tokens").equals(in_process.column("n_tokens"))
    a = np.stack(got["embedding"].to_numpy(zero_copy_only=False))
    b = np.stack(in_process["embedding"].to_numpy(zero_copy_only=False))
    assert np.array_equal(a, b)  # same parts, same threads: bitwise
    assert (s["rows_written"], s["parts"]) == (N, 5)
    assert json.loads((tmp_path / "out" / "_SUCCESS").read_text())["engine"] == s["engine"]


def test_ray_resumes_an_interrupted_run(local_ray, corpus_in, in_process, tiny_export, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = worker_mod.write_part
    written: list[str] = []

    def failing(table, path):
        if len(written) == 2:
            raise KeyboardInterrupt  # as Ctrl-C during the third part
        written.append(path.name)
        real(table, path)

    monkeypatch.setattr(worker_mod, "write_part", failing)
    with pytest.raises(KeyboardInterrupt):
        embed_corpus(corpus_in[0], out, tiny_export, progress=False, **KW)
    monkeypatch.setattr(worker_mod, "write_part", real)
    assert sorted(p.name for p in out.iterdir()) == ["_job.json", "part-00000.parquet", "part-00001.parquet"]
    (out / ".part-00003.parquet.1-dead.tmp").write_bytes(b"PAR1")
    s = embed_corpus(corpus_in[0], out, tiny_export, ray=True, progress=False, **KW)
    assert s["this_run"]["rows"] == N - 2 * PART and s["rows_written"] == N
    got = pq.read_table(out)
    assert got.equals(in_process) and len(set(got.column("doc").to_pylist())) == N
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    # a part lost after a Ray run: only that one is redone
    (out / "_SUCCESS").unlink()
    (out / "part-00004.parquet").unlink()
    s = embed_corpus(corpus_in[0], out, tiny_export, ray=True, progress=False, **KW)
    assert s["this_run"]["rows"] == N - 4 * PART and pq.read_table(out).equals(in_process)


def test_ray_worker_error_is_one_clean_error(local_ray, corpus_in, tiny_export, tmp_path):
    """A part that no longer matches its file fails in the actor; the driver gets the CorpusError's
    own line, not Ray's traceback."""
    from dmeta_embed.corpus.worker import JobSpec
    from dmeta_embed.runtime.plan import make_plan

    (tmp_path / "out").mkdir()
    plan = make_plan(tiny_export, "fp32", "cpu", "bulk").to_dict()
    spec = JobSpec(str(tmp_path / "out"), plan, "body", "doc", "error")
    bad = Part(0, str(corpus_in[0]), "parquet", N - 10, N + 10, 0, 20)  # past the file's end
    with pytest.raises(CorpusError) as e:
        RayExecutor().run(spec, [bad])
    assert str(e.value).startswith(f"{corpus_in[0]}: has changed since the job was planned (expected 20 rows")
    assert "Traceback" not in str(e.value)
    assert list((tmp_path / "out").iterdir()) == []
