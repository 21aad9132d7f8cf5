"""CLI: encode / similarity / inspect / export errors, through click's runner and a real process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from dmeta_embed import Embedder
from dmeta_embed.cli import cli

QUERIES = ["胡子长得太快怎么办？", "在香港哪里买手表好"]
DOCS = ["胡子长得快怎么办？", "怎样使胡子不浓密！", "香港买手表哪里好", "在杭州手机到哪里买"]


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def test_encode_args_jsonl(runner, tiny_export):
    r = runner.invoke(cli, ["encode", "-m", str(tiny_export), "--variant", "fp32", *QUERIES])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [row["index"] for row in rows] == [0, 1]
    got = np.array([row["embedding"] for row in rows], dtype=np.float32)
    want = Embedder.load(tiny_export, variant="fp32").encode(QUERIES)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_encode_precision_and_refused_options(runner, tiny_export, tmp_path):
    """--precision gives sentence-transformers' integers (the documented calibration ranges);
    a prompt or dimension the export lacks is one clean error line."""
    util = pytest.importorskip("sentence_transformers.util")
    from dmeta_embed.texts import calibration_texts

    emb = Embedder.load(tiny_export, variant="fp32")
    want = util.quantize_embeddings(
        emb.encode(DOCS), "int8", calibration_embeddings=emb.encode(calibration_texts())
    )
    r = runner.invoke(
        cli, ["encode", "-m", str(tiny_export), "--variant", "fp32", "--precision", "int8", *DOCS]
    )
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal([json.loads(line)["embedding"] for line in r.output.splitlines()], want)
    r = runner.invoke(
        cli,
        [
            "encode",
            "-m",
            str(tiny_export),
            "--precision",
            "ubinary",
            "--format",
            "npy",
            "-o",
            str(tmp_path / "b.npy"),
            "x",
        ],
    )
    assert r.exit_code == 0 and np.load(tmp_path / "b.npy").shape == (1, emb.dim // 8)
    for flag, words in (
        (["--prompt-name", "query"], "prompt_name 'query'"),
        (["--dimensions", "8"], "no Matryoshka dims"),
    ):
        r = runner.invoke(cli, ["encode", "-m", str(tiny_export), *flag, "x"])
        assert r.exit_code != 0 and words in str(r.exception or r.output)


def test_encode_file_to_npy(runner, tiny_export, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    out = tmp_path / "e.npy"
    r = runner.invoke(
        cli,
        [
            "encode",
            "-m",
            str(tiny_export),
            "-i",
            str(src),
            "--format",
            "npy",
            "-o",
            str(out),
            "--variant",
            "fp32",
        ],
    )
    assert r.exit_code == 0, r.output
    arr = np.load(out)
    assert arr.shape == (4, 64)
    np.testing.assert_allclose(arr, Embedder.load(tiny_export, variant="fp32").encode(DOCS), atol=1e-6)


def test_encode_jsonl_input_and_env_model(runner, tiny_export, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(DOCS)), encoding="utf-8")
    r = runner.invoke(cli, ["encode", "-i", str(src)], env={"DMETA_EMBED_MODEL": str(tiny_export)})
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["index"] for row in rows] == [0, 1, 2, 3]  # every text, in order
    want = Embedder.load(tiny_export).encode(DOCS)  # the same auto choice, the same batch
    np.testing.assert_allclose([row["embedding"] for row in rows], want, atol=1e-6)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no"}\n')
    r = runner.invoke(cli, ["encode", "-m", str(tiny_export), "-i", str(bad)])
    assert r.exit_code == 2 and "bad.jsonl:2" in r.output


def test_encode_stdin_subprocess(tiny_export):
    r = subprocess.run(
        [sys.executable, "-m", "dmeta_embed.cli", "encode", "-m", str(tiny_export), "-i", "-"],
        input="\n".join(QUERIES),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["index"] for row in rows] == [0, 1]
    want = Embedder.load(tiny_export).encode(QUERIES)
    np.testing.assert_allclose([row["embedding"] for row in rows], want, atol=1e-6)


def test_encode_usage_errors(runner, tiny_export, tmp_path):
    r = runner.invoke(cli, ["encode", "-m", str(tiny_export)])
    assert r.exit_code == 2 and "nothing to encode" in r.output
    r = runner.invoke(cli, ["encode", "-m", str(tiny_export), "--format", "npy", "x"])
    assert r.exit_code == 2 and "needs --output" in r.output


def test_similarity_reproduces_model_card_format(runner, tiny_export):
    args = ["similarity", "-m", str(tiny_export), "--variant", "fp32", *QUERIES]
    for d in DOCS:
        args += ["--docs", d]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == f"查询文本：{QUERIES[0]}"
    block = lines[1:5]
    assert all(line.startswith("相似文本：") and "，打分：" in line for line in block)
    scores = [float(line.rsplit("，打分：", 1)[1]) for line in block]
    assert scores == sorted(scores, reverse=True)
    emb = Embedder.load(tiny_export, variant="fp32")
    want = emb.encode(QUERIES[:1]) @ emb.encode(DOCS).T
    assert max(scores) == pytest.approx(float(want.max()), abs=1e-5)
    assert {line.split("，打分：")[0][5:] for line in block} == set(DOCS)
    assert lines[6] == f"查询文本：{QUERIES[1]}"


def test_inspect(runner, tiny_export):
    r = runner.invoke(cli, ["inspect", str(tiny_export)])
    assert r.exit_code == 0, r.output
    for needle in (
        "pooling   cls",
        "dim 64",
        "model.int8.onnx",
        "Attention 2",
        "yes",
        "this cpu  ",
        "auto      ",
        "serve     ",
        "passes    cls_only_last_layer, unfuse_skip_layernorm",
    ):
        assert needle in r.output
    r = runner.invoke(cli, ["inspect", "--json", str(tiny_export)])
    assert json.loads(r.output)["dim"] == 64


def test_domain_errors_are_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "dmeta_embed.cli", "inspect", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert r.stderr.strip().startswith("Error:") and "manifest.json" in r.stderr
    assert "Traceback" not in r.stderr


def test_export_command(runner, tiny_src, tmp_path):
    out = tmp_path / "exp"
    r = runner.invoke(cli, ["export", str(tiny_src), "-o", str(out), "--variants", "fp32"])
    assert r.exit_code == 0, r.output
    assert (
        "model.onnx" in r.output and (out / "model.onnx").exists() and not (out / "model.int8.onnx").exists()
    )
    r = runner.invoke(cli, ["export", str(tiny_src), "-o", str(out), "--variants", "fp64"])
    assert r.exit_code == 2 and "fp64" in r.output


@pytest.mark.parametrize(
    "command, flag, bad, floor",
    [
        ("serve", "--threads", "0", "x>=1"),
        ("serve", "--max-batch-tokens", "0", "x>=1"),
        ("serve", "--batch-size", "0", "x>=1"),
        ("serve", "--max-wait-ms", "-1", "x>=0"),
        ("serve", "--request-timeout", "0", "x>=0.001"),
        ("embed-corpus", "--part-rows", "0", "x>=1"),
        ("embed-corpus", "--threads", "0", "x>=1"),
        ("embed-corpus", "--workers", "0", "x>=1"),
        ("embed-corpus", "--worker-cpus", "0", "x>=1"),
    ],
)
def test_numeric_options_refuse_values_below_their_floor(runner, tmp_path, command, flag, bad, floor):
    """The shared numeric option (cli/options.py: number_option) keeps each option's own range."""
    pre = [str(tmp_path / "in.parquet"), str(tmp_path / "out")] if command == "embed-corpus" else []
    res = runner.invoke(cli, [command, *pre, "-m", str(tmp_path), flag, bad])
    assert res.exit_code == 2, res.output
    assert f"Invalid value for '{flag}'" in res.output and floor in res.output


def test_numeric_option_defaults():
    """Shown where there is one: serve's are ServerConfig's, the corpus job's its documented ones."""
    from dmeta_embed.serve.config import ServerConfig

    serve = {p.name: p for p in cli.commands["serve"].params}
    config = ServerConfig()
    for name in ("batch_size", "max_wait_ms", "max_queue", "max_inputs", "max_chars", "request_timeout_s"):
        assert (serve[name].default, serve[name].show_default) == (getattr(config, name), True), name
    assert (serve["threads"].default, serve["max_batch_tokens"].default) == (None, None)
    corpus = {p.name: p for p in cli.commands["embed-corpus"].params}
    assert (corpus["part_rows"].default, corpus["worker_cpus"].default) == (10_000, 1)
    assert (corpus["threads"].default, corpus["workers"].default) == (None, None)
    assert not corpus["threads"].show_default and corpus["part_rows"].show_default
