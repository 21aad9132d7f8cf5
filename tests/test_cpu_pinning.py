"""OpenVINO's thread pinning: on only where a process has the CPUs it may run on to itself.

OpenVINO's CPU plugin pins its inference threads to the first CPUs of the process's affinity mask
(Linux, by default). Two processes that share CPUs without a cpuset (Ray replicas of 1 CPU, Ray
Data actors, containers limited by a quota only) then pin to the same CPU. The plan decides from
the threads and the affinity's size, injected here; the compiled model is read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmeta_embed.runtime import plan as plan_module
from dmeta_embed.runtime.cpu import owns_cpus
from dmeta_embed.runtime.installed import Installed
from dmeta_embed.runtime.plan import LoadPlan, make_plan

PIN = "ENABLE_CPU_PINNING"
EVERY_ENGINE = Installed(cuda=False, openvino=True, onnxruntime=True)


@pytest.mark.parametrize(
    ("threads", "affinity", "owns"),
    [
        (1, 2, False),  # a Ray replica of 1 CPU on a 2-CPU host
        (8, 64, False),  # a container held by a quota of 8 cores, no cpuset
        (2, 2, True),  # a whole machine
        (1, 1, True),  # taskset -c 0
        (64, 64, True),
        (4, 2, True),  # more threads than CPUs: still every CPU of the mask
        (3, None, True),  # affinity unknown: the engine's own default
    ],
)
def test_a_process_owns_its_cpus_when_its_threads_cover_its_affinity(threads, affinity, owns):
    assert owns_cpus(threads, affinity) is owns


@pytest.fixture(scope="module")
def ov_folder(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a bf16 variant, built on any CPU: the builder told it has native bf16,
    OpenVINO asked for f32 (as ``test_bf16``'s builder test does)."""
    pytest.importorskip("openvino")
    from dmeta_embed.export import export_model
    from dmeta_embed.export.builders import BUILDERS
    from dmeta_embed.export.builders import bf16 as builder
    from dmeta_embed.export.builders.bf16 import BF16
    from dmeta_embed.manifest import Precision
    from dmeta_embed.variant_records import EngineProperties, InferencePrecision
    from tests.test_bf16 import AMX

    out = tmp_path_factory.mktemp("tiny-ov-pin") / "model"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(BUILDERS, Precision.BF16, BF16(AMX))
        mp.setattr(builder, "PROPERTIES", EngineProperties(InferencePrecision.F32))
        mp.setattr(builder, "_check_bf16", lambda runner: None)
        export_model(str(tiny_src), out, variants=("fp32", "bf16"))
    return out


def _plan(folder: Path, threads: int, affinity: int | None) -> LoadPlan:
    return make_plan(
        folder, "bf16", "openvino", "server", threads=threads, affinity=affinity, engines=EVERY_ENGINE
    )


@pytest.mark.parametrize(("threads", "affinity", "pinning"), [(1, 2, False), (2, 2, True), (1, 1, True)])
def test_the_plan_records_its_pinning_decision(ov_folder, threads, affinity, pinning):
    p = _plan(ov_folder, threads, affinity)
    d = p.to_dict()
    assert (p.cpu_pinning, d["cpu_pinning"], d["affinity"], d["threads"]) == (
        pinning,
        pinning,
        affinity,
        threads,
    )
    # an onnxruntime plan has no pinning to record (onnxruntime does not pin its threads)
    ort = make_plan(ov_folder, "fp32", "cpu", threads=threads, affinity=affinity, engines=EVERY_ENGINE)
    assert ort.to_dict()["cpu_pinning"] is None


@pytest.mark.parametrize(("mask", "pinning"), [(frozenset({0, 1, 2, 3}), False), (frozenset({5}), True)])
def test_a_replica_decides_from_its_own_affinity(ov_folder, monkeypatch, mask, pinning):
    """A Ray replica makes the driver's plan again (``LoadPlan.from_dict``) on its own threads: the
    affinity read there, not the driver's, decides."""
    shipped = _plan(ov_folder, 1, 1).to_dict()  # the driver, say, on a 1-CPU mask: pinning on
    monkeypatch.setattr(plan_module, "own_affinity", lambda: mask)
    here = LoadPlan.from_dict(shipped, threads=1)
    assert (here.affinity, here.cpu_pinning) == (len(mask), pinning)


def _compiled(runner: object) -> object:
    owner = getattr(runner, "owner", runner)  # a server's lane, or the runner itself
    return owner.compiled  # type: ignore[attr-defined]


def test_the_compiled_model_gets_the_plans_pinning(ov_folder):
    """Read back from OpenVINO: off where the plan says so; where the process owns its CPUs the
    property is not set, so OpenVINO's own default stands (the same model compiled without it)."""
    import openvino as ov

    from dmeta_embed import Embedder

    off = Embedder(_plan(ov_folder, 1, 2))
    assert _compiled(off.pipeline.runner).get_property(PIN) is False
    owned_plan = _plan(ov_folder, 1, 1)
    owned = Embedder(owned_plan)
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": 1,
        **owned_plan.choice.engine_properties,
    }
    default = ov.Core().compile_model(str(owned_plan.model_file), "CPU", config).get_property(PIN)
    assert _compiled(owned.pipeline.runner).get_property(PIN) == default
    # the bulk twin (throughput mode, compiled at the first large call) keeps the runner's setting
    from dmeta_embed.runtime.openvino import OpenVINORunner

    props = dict(owned_plan.choice.engine_properties)
    runner = OpenVINORunner(owned_plan.model_file, 2, props, bulk=True, cpu_pinning=False)
    twin = runner._bulk_twin(100)
    assert runner.compiled.get_property(PIN) is False
    if twin is not None:  # None on a 1-CPU machine: one stream, no twin
        assert twin.compiled.get_property(PIN) is False
