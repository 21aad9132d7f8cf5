"""The many-core serving benchmark (benchmarks/serve_scaling.py) on the tiny model, its pure parts
(core counts, CPU layout, summary), and the carry bundle it travels in (benchmarks/scaling_bundle.py)."""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.scaling_bundle import (
    LIMIT,
    MARGIN,
    BundleError,
    Fit,
    build,
    extract_wheels,
    requirements,
    unpack,
)
from benchmarks.serve_scaling import client_procs, core_counts, cpulist, layout, pinned
from benchmarks.serve_scaling_report import summarize
from dmeta_embed import Embedder

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


def quota() -> float | None:
    """The cgroup CPU quota in cores, read here (not through the runtime)."""
    try:
        q, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if q == "max" else int(q) / int(period)
    except (OSError, ValueError):
        return None


def expected_split(n: int, mode: str) -> tuple[int, int]:
    """docs/serving.md's rule for a server that sees ``n`` CPUs, up to 4 of them: one worker on
    all of them (``auto``: the quota rounded up caps the threads); ``one``: ``--threads n``."""
    assert n <= 4, "the rule's multi-worker side is tested in test_workers.py"
    q = quota()
    if mode == "auto" and q is not None:
        return 1, max(1, min(n, math.ceil(q)))
    return 1, n


# -- the run ---------------------------------------------------------------------------------------------


def test_serve_scaling_on_the_tiny_model(tiny_export: Path, tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    args = ["--model", str(tiny_export), "--name", "tiny", "--cores", "1,2", "--seconds", "0.8"]
    args += ["--single-seconds", "0.4", "--warmup-s", "0.2", "--budget-s", "120"]
    args += ["--results-dir", str(tmp_path / "res"), "--copy-to", str(tmp_path / "out")]
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.serve_scaling", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads((tmp_path / "res" / "serve_scaling.json").read_text())
    assert (tmp_path / "out" / "serve_scaling.json").read_text() == (
        tmp_path / "res" / "serve_scaling.json"
    ).read_text()
    counts = [n for n in (1, 2) if n <= len(cpus)]
    got = {(p["cores"], p["mode"]): p for p in result["points"]}
    assert set(got) == {(n, m) for n in counts for m in ("auto", "one")}
    assert result["skipped"] == []
    for (n, mode), p in got.items():
        assert (p["workers"], p["threads"]) == expected_split(n, mode), (n, mode)
        assert p["server_cpus"] == cpulist(tuple(cpus[:n]))
        assert p["client_shares_cores"] == (n == len(cpus))
        assert p["exit_status"] == 0
        assert [lv["concurrency"] for lv in p["levels"]] == [64, 1]
        for lv in p["levels"]:
            assert lv["requests"] > 0 and lv["throughput_rps"] > 0 and lv["errors"] == 0
            assert 0 < lv["p50_ms"] <= lv["p99_ms"]
            assert lv["server_cpu_s"] > 0
            # the server cannot be busier than the CPUs it is pinned to (20 % for sampling)
            assert lv["server_cores_busy"] <= 1.2 * n
        assert p["levels"][0]["throughput_rps"] == pytest.approx(
            p["levels"][0]["requests"] / p["levels"][0]["seconds"], rel=0.01
        )
    rps = result["summary"]["rps"]
    assert {int(n) for n in rps["auto"]} == set(counts)
    md = (tmp_path / "out" / "serve_scaling.md").read_text()
    assert sum(line.startswith(f"| {n} | ") for line in md.splitlines() for n in counts) == 2 * len(counts)


def test_a_point_that_fails_is_listed_and_the_run_says_so(tiny_export: Path, tmp_path: Path) -> None:
    args = ["--model", str(tiny_export), "--variant", "bf16", "--cores", "1", "--modes", "auto"]
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.serve_scaling", *args, "--results-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, OUT=""),
    )
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads((tmp_path / "serve_scaling.json").read_text())
    assert result["points"] == []
    [skipped] = result["skipped"]
    assert (skipped["cores"], skipped["mode"]) == (1, "auto")
    assert skipped["why"].startswith("failed: server exited") and "bf16" in skipped["log"]


def test_pinned_prefix_sets_the_affinity() -> None:
    first = min(os.sched_getaffinity(0))
    code = "import os; print(sorted(os.sched_getaffinity(0)))"
    out = subprocess.run(
        [*pinned((first,)), sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"[{first}]"


# -- pure parts ------------------------------------------------------------------------------------------


def test_core_counts_cap_and_order() -> None:
    assert core_counts([2, 4, 8, 16], 16) == [2, 16, 4, 8]  # the curve's ends first
    assert core_counts([2, 4, 8, 16], 16, "ascending") == [2, 4, 8, 16]
    assert core_counts([2, 4, 8, 16], 12) == [2, 12, 4, 8]  # capped at the machine's
    assert core_counts([1, 2], 1) == [1]
    assert core_counts([1, 2], 2) == [1, 2]


def test_layout_and_client_processes() -> None:
    sixteen = list(range(16))
    two = layout(sixteen, 2)
    assert (two.server, two.client, two.shared) == ((0, 1), tuple(range(2, 16)), False)
    assert client_procs("auto", two, 64) == 4 and client_procs("auto", two, 1) == 1
    full = layout(sixteen, 16)
    assert full.shared and full.client == tuple(sixteen)
    assert client_procs("auto", layout([0, 1], 1), 64) == 1  # one spare CPU: one client
    assert client_procs("3", full, 2) == 2  # never more processes than connections
    assert cpulist((0, 1, 2, 3, 8, 10, 11)) == "0-3,8,10-11"
    assert layout([4, 5, 6, 7], 2).server == (4, 5)  # the affinity's CPUs, not 0..n-1


def _point(cores: int, mode: str, rps: float, p50: float) -> dict:
    lv = {"concurrency": 64, "throughput_rps": rps}
    return {"cores": cores, "mode": mode, "levels": [lv, {"concurrency": 1, "p50_ms": p50}]}


def test_summary_speedup_and_target() -> None:
    result = {
        "settings": {"concurrency": [64, 1]},
        "points": [
            _point(2, "auto", 400, 3.0),
            _point(16, "auto", 2600, 2.0),
            _point(2, "one", 400, 3.0),
            _point(16, "one", 2000, 1.5),
            _point(8, "auto", 1500, 2.0),
        ],
    }
    s = summarize(result)
    assert s["speedup"]["auto"] == {2: 1.0, 8: 3.75, 16: 6.5}
    assert s["target"] == {"auto": {"ratio": 6.5, "met": True}, "one": {"ratio": 5.0, "met": False}}
    assert s["auto_over_one"] == {2: 1.0, 16: 1.3}
    assert s["lone_p50_ms"]["one"] == {2: 3.0, 16: 1.5}


# -- the carry bundle ----------------------------------------------------------------------------------


def test_fit_against_the_transfer_limit() -> None:
    assert (LIMIT, MARGIN) == (64 * MiB, 3 * MiB)
    exact = Fit(tree=4 * MiB, bundle=57 * MiB)
    assert exact.total == 61 * MiB and exact.left == 0 and exact.ok
    over = Fit(tree=4 * MiB, bundle=57 * MiB + 1)
    assert over.left == -1 and not over.ok and "does NOT fit" in over.describe()
    # the real export's fp32 file (90,286,538 bytes) alone is past the limit
    assert not Fit(tree=0, bundle=90_286_538).ok


def test_requirements_are_the_server_stack_pinned() -> None:
    reqs = requirements(REPO)
    names = {r.split("==")[0].split(">=")[0].lower().replace("_", "-") for r in reqs}
    assert {"click", "starlette", "uvicorn", "prometheus-client", "uvloop", "httptools"} <= names
    assert not names & {"numpy", "tokenizers", "onnxruntime"}  # the host has them


def _wheel(folder: Path) -> Path:
    folder.mkdir()
    path = folder / "fakepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fakepkg/__init__.py", "VALUE = 42\n")
        z.writestr("fakepkg-1.0.dist-info/METADATA", "Name: fakepkg\nVersion: 1.0\n")
    return path


def test_bundle_round_trip(tiny_export: Path, tmp_path: Path) -> None:
    carry = build(tiny_export, tmp_path / "carry", "int8", "tiny", _wheel(tmp_path / "wheels").parent)
    assert carry["model"]["name"] == "tiny" and [w["name"] for w in carry["wheels"]] == [
        "fakepkg-1.0-py3-none-any.whl"
    ]
    manifest = json.loads((tmp_path / "carry" / "model" / "manifest.json").read_text())
    assert list(manifest["variants"]) == ["int8"]  # trimmed to the carried variant
    assert not (tmp_path / "carry" / "model" / "model.onnx").exists()
    dest = unpack(tmp_path / "carry", tmp_path / "model")
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "model.int8.onnx", "tokenizer.json"]
    assert (dest / "model.int8.onnx").read_bytes() == (tiny_export / "model.int8.onnx").read_bytes()
    texts = ["hello world", "a second, longer text to embed"]
    got = Embedder.load(dest, variant="int8").encode(texts)
    want = Embedder.load(tiny_export, variant="int8", guard=False).encode(texts)
    np.testing.assert_array_equal(got, want)
    extract_wheels(tmp_path / "carry", tmp_path / "site")
    assert (tmp_path / "site" / "fakepkg" / "__init__.py").read_text() == "VALUE = 42\n"


def test_bundle_names_a_damaged_file(tiny_export: Path, tmp_path: Path) -> None:
    build(tiny_export, tmp_path / "carry", "int8", "tiny", _wheel(tmp_path / "wheels").parent)
    gz = tmp_path / "carry" / "model" / "model.int8.onnx.gz"
    data = bytearray(gzip.decompress(gz.read_bytes()))
    data[len(data) // 2] ^= 0xFF
    gz.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(BundleError, match="model.int8.onnx.gz: unpacks to a file whose sha256 differs"):
        unpack(tmp_path / "carry", tmp_path / "model")
    (tmp_path / "carry" / "wheels" / "fakepkg-1.0-py3-none-any.whl").write_bytes(b"cut")
    with pytest.raises(BundleError, match="fakepkg-1.0-py3-none-any.whl: missing or damaged"):
        unpack(tmp_path / "carry", tmp_path / "model")
    with pytest.raises(BundleError, match="no variant 'bf16'"):
        build(tiny_export, tmp_path / "again", "bf16")


def test_offline_script_says_what_is_missing(tmp_path: Path) -> None:
    r = subprocess.run(
        ["bash", "benchmarks/serve_scaling.sh", "--offline", str(tmp_path / "absent")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHON=sys.executable, OUT=""),
        timeout=60,
    )
    assert r.returncode == 2 and "no scaling bundle" in r.stderr
