"""The load plan: one value says what runs here, made from the folder, the request and the caller's
profile with the machine's facts injected; every surface (encode, serve, embed-corpus) runs it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from dmeta_embed import Embedder, ProviderError
from dmeta_embed.manifest import Manifest, Precision, Provider
from dmeta_embed.runtime import plan as plan_module
from dmeta_embed.runtime.batching import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS
from dmeta_embed.runtime.choice import choose
from dmeta_embed.runtime.cpu import CpuClass, CpuInfo, detect
from dmeta_embed.runtime.engines import Streams
from dmeta_embed.runtime.installed import Installed, installed
from dmeta_embed.runtime.plan import LoadPlan, Profile, make_plan

AMX = CpuInfo(CpuClass.AMX, flags=frozenset({"amx_int8", "amx_tile", "amx_bf16", "avx512_vnni"}))
AVX2 = CpuInfo(CpuClass.AVX2, flags=frozenset({"avx2"}))
CPU_ONLY = Installed(cuda=False, openvino=False, onnxruntime=True)


@pytest.mark.parametrize("cpu", [AMX, AVX2], ids=lambda c: c.cpu_class.value)
@pytest.mark.parametrize("profile", list(Profile))
def test_the_plan_is_the_choice_for_its_profile_with_the_machine_injected(tiny_export, cpu, profile):
    """The plan's variant and provider are ``choose``'s for the profile's needs (a server: lowest
    one-text latency and batch-invariant only), its batching the provider's defaults, its
    OpenVINO mode the profile's, its threads what was asked."""
    p = make_plan(tiny_export, profile=profile, threads=3, cpu=cpu, engines=CPU_ONLY)
    server = profile == Profile.SERVER
    want = choose(
        Manifest.load(tiny_export),
        cpu=cpu,
        installed=CPU_ONLY,
        prefer_latency=server,
        batched_requests=server,
    )
    assert (p.variant, p.provider, p.choice.int8_weights) == (want.variant, want.provider, want.int8_weights)
    assert p.threads == 3 and p.profile == profile and p.cpu == cpu
    assert p.max_batch_tokens == DEFAULT_BATCH_TOKENS[p.provider] and p.batch_size == DEFAULT_BATCH_SIZE
    streams = {
        Profile.LIBRARY: Streams.ADAPTIVE,
        Profile.SERVER: Streams.LATENCY,
        Profile.BULK: Streams.THROUGHPUT,
    }
    assert p.streams == streams[profile]
    assert p.model_file == tiny_export / Manifest.load(tiny_export).variants[p.variant.value].file
    assert p.warnings == ()


def test_explicit_settings_win_and_threads_default_to_usable_cpus(tiny_export, monkeypatch):
    monkeypatch.setattr(plan_module, "available_cpus", lambda: 5)
    p = make_plan(
        tiny_export, "fp32", "cpu", max_batch_tokens=77, batch_size=3, streams="throughput", spin=False
    )
    assert (p.variant, p.provider, p.threads) == (Precision.FP32, Provider.CPU, 5)
    assert (p.max_batch_tokens, p.batch_size, p.streams, p.spin) == (77, 3, Streams.THROUGHPUT, False)
    assert make_plan(tiny_export, "fp32", cache_dir=None).cache_dir is None


def test_plan_prints_and_travels_as_plain_data(tiny_export):
    """``describe`` prints one line per field of ``to_dict``; ``to_dict`` is JSON; ``from_dict``
    makes the same plan again by name (a corpus worker's)."""
    p = make_plan(tiny_export, "int8", "cpu", "bulk", threads=2, max_batch_tokens=512)
    d = json.loads(json.dumps(p.to_dict()))
    assert (d["variant"], d["provider"], d["engine"], d["profile"]) == ("int8", "cpu", "onnxruntime", "bulk")
    assert d["int8_weights"] == p.choice.int8_weights and d["file"] == p.model_file.name
    lines = dict(line.split(None, 1) for line in p.describe().splitlines())
    for key in ("variant", "provider", "engine", "threads", "max_batch_tokens", "batch_size", "profile"):
        assert lines[key] == str(d[key]), key
    again = LoadPlan.from_dict(d, threads=1)
    assert (again.variant, again.provider, again.profile) == (p.variant, p.provider, p.profile)
    assert (again.max_batch_tokens, again.batch_size, again.streams, again.threads) == (
        512,
        p.batch_size,
        p.streams,
        1,
    )


def test_embedder_runs_its_plan(tiny_export):
    emb = Embedder.load(tiny_export, "fp32", "cpu", profile="server", batch_size=4)
    assert emb.plan.profile == Profile.SERVER and emb.batch_size == 4
    assert (
        (emb.variant, emb.provider) == (emb.plan.variant, emb.plan.provider) == (Precision.FP32, Provider.CPU)
    )
    direct = Embedder(make_plan(tiny_export, "fp32", "cpu"))
    texts = ["胡子长得太快怎么办？", "在香港哪里买手表好"]
    np.testing.assert_allclose(emb.encode(texts), direct.encode(texts), atol=1e-6)


def test_both_loaders_share_one_load(tiny_export, ce_export, caplog):
    """``Embedder.load`` and ``Reranker.load`` go through ``runtime.loading``: the options typed
    once are the ones planned with, each class's plan is ``make_plan``'s for the same options, and
    each logs the plan that runs once."""
    import inspect

    from dmeta_embed import Reranker
    from dmeta_embed.runtime.loading import LoadOptions, PlanOptions, load_plan

    # the typed options are what load_plan takes by name and what make_plan plans with
    own = {k for k, v in inspect.signature(load_plan).parameters.items() if v.kind == v.KEYWORD_ONLY}
    assert set(LoadOptions.__annotations__) == own | set(PlanOptions.__annotations__)
    assert set(PlanOptions.__annotations__) < set(inspect.signature(make_plan).parameters)
    options: dict = {"profile": "bulk", "threads": 2, "max_batch_tokens": 300, "batch_size": 5}
    options |= {"streams": "latency", "spin": False, "verify": False, "guard": False, "engines": CPU_ONLY}
    fields = ("profile", "threads", "max_batch_tokens", "batch_size", "streams", "spin", "verify", "guard")
    with caplog.at_level(logging.INFO, logger="dmeta_embed"):
        loaded = [Embedder.load(tiny_export, "fp32", "cpu", **options)]
        loaded.append(Reranker.load(ce_export, variant="fp32", provider="cpu", **options))
    for obj, folder in zip(loaded, (tiny_export, ce_export), strict=True):
        want = make_plan(folder, "fp32", "cpu", **options)
        assert [getattr(obj.plan, f) for f in fields] == [getattr(want, f) for f in fields]
        assert obj.plan.installed == CPU_ONLY and obj.path == folder
        said = [r for r in caplog.records if r.levelno == logging.INFO and str(folder) in r.getMessage()]
        assert len(said) == 1 and want.choice.reason in said[0].getMessage()


def test_the_task_is_checked_before_an_engine_starts(tiny_export, ce_export, monkeypatch):
    from dmeta_embed import Reranker
    from dmeta_embed.errors import ModelLoadError
    from dmeta_embed.runtime import loading

    def no_start(plan: LoadPlan) -> None:
        raise AssertionError(f"{plan.folder} was started")

    monkeypatch.setattr(loading, "start", no_start)
    with pytest.raises(ModelLoadError, match="load it with Embedder.load, not Reranker.load"):
        Reranker(make_plan(tiny_export, "fp32", "cpu"))
    with pytest.raises(ModelLoadError, match="load it with Reranker.load, not Embedder.load"):
        Embedder(make_plan(ce_export, "fp32", "cpu"))


# -- CUDA listed but not starting: every surface runs the CPU plan -----------------------------------


@pytest.fixture
def cuda_listed(monkeypatch) -> Installed:
    """onnxruntime-gpu lists CUDA also where it cannot start (no driver, missing libraries); the
    CPU onnxruntime here stands in for that: asked for CUDA, its session fails to start."""
    listed = Installed(cuda=True, openvino=installed().openvino, onnxruntime=True)
    monkeypatch.setattr(plan_module, "installed", lambda: listed)
    return listed


def cpu_plan(folder: Path, profile: Profile) -> LoadPlan:
    """What the plan is where CUDA is not installed at all: the independent expectation."""
    return make_plan(folder, profile=profile, engines=Installed(openvino=installed().openvino))


def test_encode_runs_on_the_cpu_when_cuda_does_not_start(tiny_export, cuda_listed, caplog):
    assert make_plan(tiny_export).provider == Provider.CUDA  # what auto would run, were it to start
    with caplog.at_level(logging.WARNING, logger="dmeta_embed"):
        emb = Embedder.load(tiny_export)
    want = cpu_plan(tiny_export, Profile.LIBRARY)
    assert (emb.variant, emb.provider) == (want.variant, want.provider) and emb.provider != Provider.CUDA
    assert emb.plan.fallback and emb.plan.warnings[0] == emb.plan.fallback
    assert emb.plan.to_dict()["warnings"] == list(emb.plan.warnings)
    ref = Embedder(want)
    texts = ["胡子长得太快怎么办？", "在香港哪里买手表好"]
    np.testing.assert_allclose(emb.encode(texts), ref.encode(texts), atol=1e-6)
    with pytest.raises(ProviderError):  # asked for by name, CUDA still fails
        Embedder.load(tiny_export, provider="cuda")


def test_serve_runs_on_the_cpu_when_cuda_does_not_start(tiny_export, cuda_listed):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from dmeta_embed.serve import ServerConfig, create_app, load_embedder

    emb = load_embedder(tiny_export, ServerConfig())
    want = cpu_plan(tiny_export, Profile.SERVER)
    assert emb.plan.profile == Profile.SERVER and emb.plan.fallback
    assert (emb.variant, emb.provider) == (want.variant, want.provider)
    with TestClient(create_app(emb, ServerConfig(max_wait_ms=1))) as client:
        info = client.get("/info").json()
        got = client.post("/v1/embeddings", json={"input": ["在香港哪里买手表好"]}).json()
    assert (info["variant"], info["provider"]) == (want.variant.value, want.provider.value)
    ref = Embedder(want).encode(["在香港哪里买手表好"])
    np.testing.assert_allclose(np.array(got["data"][0]["embedding"]), ref[0], atol=1e-5)


def test_embed_corpus_runs_on_the_cpu_when_cuda_does_not_start(tiny_export, cuda_listed, tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from dmeta_embed.corpus import embed_corpus

    texts = ["胡子长得太快怎么办？", "在香港哪里买手表好", "今天北京的天气怎么样？"]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), "utf-8")
    summary = embed_corpus(src, tmp_path / "out", tiny_export, progress=False)
    want = cpu_plan(tiny_export, Profile.BULK)
    assert (summary["model"]["variant"], summary["model"]["provider"]) == (
        want.variant.value,
        want.provider.value,
    )
    got = np.stack(pq.read_table(tmp_path / "out").column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(got, Embedder(want).encode(texts), atol=1e-5)


def test_the_detected_machine_is_the_default(tiny_export):
    p = make_plan(tiny_export)
    assert p.cpu == detect() and p.installed == installed()
