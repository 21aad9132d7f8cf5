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


# --- the ceiling analysis (benchmarks/ceiling.py) ----------------------------------------------------


def test_ceiling_model_shape_counts_every_gemm_weight(tiny_export) -> None:
    from benchmarks.ceiling import model_shape

    for variant in ("fp32", "int8"):  # int8: quantized and kept-fp32 weights alike
        s = model_shape(tiny_export / f"model{'' if variant == 'fp32' else '.int8'}.onnx")
        # tiny: 2 layers, hidden 64, 4 heads, FFN 128 → per layer QKV 64×192 + out 64×64 + FFN 2×64×128
        assert {k: s[k] for k in ("heads", "hidden", "ffn", "layers", "weight_elems")} == {
            "heads": 4,
            "hidden": 64,
            "ffn": 128,
            "layers": 2,
            "weight_elems": 2 * 32768,
        }, variant
        assert s["gelu"] == 2 and s["layernorm"] == 4 and s["kernels"] > 20, variant


def test_ceiling_bound_arithmetic() -> None:
    from benchmarks.ceiling import bound

    shape = {"hidden": 768, "ffn": 3072, "layers": 12, "heads": 12, "weight_elems": 84_934_656}
    rates = {"int8_gemm_tops": 2.0, "attention_gflops": {64: 100.0, 300: 200.0, 1024: 250.0}}
    prof = {
        "tokens": 2048 + 1000,
        "tokens_per_s": 1000,
        "cls_only_last_layer": False,
        "_shapes": [(2, 1024), (10, 100)],
    }
    b = bound(prof, shape, rates)
    gemm = 2.0 * 84_934_656 * (2048 + 1000)
    assert b["t_gemm_s"] == round(gemm / 2e12, 3)
    # 2×1024 at the 1024 rate; 10×100 at the nearest measured length (64)
    attn = 4.0 * 2 * 1024**2 * 768 * 12 / 250e9 + 4.0 * 10 * 100**2 * 768 * 12 / 100e9
    assert b["t_attention_s"] == round(attn, 3)
    assert b["ceiling_tokens_per_s"] == round(3048 / (gemm / 2e12 + attn))
    # CLS-only last layer: its attention-output and FFN weights run once per sequence
    cls = bound({**prof, "cls_only_last_layer": True}, shape, rates)
    tail = 768 * 768 + 2 * 768 * 3072
    assert cls["gemm_tera_ops"] == round(2.0 * ((84_934_656 - tail) * 3048 + tail * 12) / 1e12, 3)
    assert cls["ceiling_tokens_per_s"] > b["ceiling_tokens_per_s"]
    # element-wise work at its kernel rates: 12 GELUs over 3072, 24 LayerNorms and 48 Adds over 768
    full = {**shape, "gelu": 12, "layernorm": 24, "add": 48, "kernels": 300}
    rates_e = {**rates, "elementwise_gelem_per_s": {"BiasGelu": 2.0, "LayerNormalization": 4.0, "Add": 8.0}}
    e = bound(prof, full, rates_e)
    elem = 3048 * (12 * 3072 / 2e9 + 24 * 768 / 4e9 + 48 * 768 / 8e9)
    assert e["t_elementwise_s"] == round(elem, 3)
    assert e["ceiling_with_elementwise_tokens_per_s"] == round(3048 / (gemm / 2e12 + attn + elem))
    assert "t_elementwise_s" not in b  # only when the shape and the rates carry the counts


def test_openvino_ep_candidates_are_built_and_measured_against_torch(tiny_src, tmp_path: Path) -> None:
    """benchmarks.openvino_ep: the raw export + head reproduces torch, the NNCF graphs quantize
    what they claim (static: activations and weights; weights-only: weights alone)."""
    pytest.importorskip("nncf")
    import onnx

    from benchmarks import openvino_ep
    from dmeta_embed.runtime.session import CPU
    from dmeta_embed.texts import calibration_texts, probe_texts

    work = tmp_path / "tiny"
    info = openvino_ep.build(str(tiny_src), work)
    assert info["calibration_texts"] == len(calibration_texts()) and len(info["probe_texts"]) == len(
        probe_texts(1024)
    )
    fp32 = openvino_ep.fidelity_of(work, "fp32.onnx", CPU, {}, 1)
    assert fp32["min_cos"] > 0.99999
    inits = lambda m: {i.name for i in m.graph.initializer}  # noqa: E731

    static = onnx.load(str(work / "static.onnx"))
    q_inputs = [n.input[0] for n in static.graph.node if n.op_type == "QuantizeLinear"]
    assert any(i not in inits(static) for i in q_inputs), "no activation is quantized"
    wonly = onnx.load(str(work / "wonly.onnx"))
    assert not [
        n for n in wonly.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits(wonly)
    ]
    dq = [n for n in wonly.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) >= 6 * 2  # tiny BERT: 2 layers × 6 weight MatMuls (+ embeddings)
    # int8 weights are still within the int8 bar on CPU (onnxruntime dequantizes them)
    w = openvino_ep.fidelity_of(work, "wonly.onnx", CPU, {}, 1)
    assert w["min_cos"] > 0.99


def test_openvino_ep_table() -> None:
    from benchmarks import openvino_ep

    rows = [
        {
            "system": "a",
            "speed": {
                "query_tok_s": 10583.4,
                "mixed_tok_s": 7004,
                "query16_p50_ms": 3.834,
                "query_first_pass_extra_ms_per_batch": 46.9,
            },
            "fidelity:minilm": {"min_cos": 0.95352, "mean_cos": 0.99008},
        },
        {"system": "b", "fidelity:minilm": {"min_cos": 0.99652, "mean_cos": 0.99884}},
    ]
    md = openvino_ep.table(rows, ["minilm"]).splitlines()
    assert md[2] == "| a | 10,583 | 7,004 | 3.83 | 47 | 0.9535 / 0.9901 |"
    assert md[3] == "| b | — | — | — | — | 0.9965 / 0.9988 |"


def test_int8_ov_system_runs_in_this_environment() -> None:
    """int8-ov runs on OpenVINO beside onnxruntime: same interpreter, openvino a required module."""
    from benchmarks.systems import our_systems

    fp32, ov = our_systems(["fp32", "int8-ov"])
    assert fp32.engine == "ONNX Runtime CPU" and "openvino" not in fp32.requires
    assert ov.engine == "OpenVINO CPU" and ov.precision == "int8" and "openvino" in ov.requires
    assert System.from_dict(ov.to_dict()) == ov
    # results recorded when int8-ov ran in a second environment still load
    assert System.from_dict({**ov.to_dict(), "python": "/old/.venv-openvino/bin/python"}) == ov
