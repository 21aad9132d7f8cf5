"""How ``serve`` starts, as the container images use it: the API key from DMETA_EMBED_API_KEY when
--api-key-env is not given; a Hugging Face model (hub id or model folder) exported once into the
cache and served from there. The server itself is replaced: nothing binds a port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import dmeta_embed.serve
from dmeta_embed.cli import cli, served_model
from dmeta_embed.errors import MissingDependencyError
from dmeta_embed.manifest import MANIFEST_NAME
from dmeta_embed.serve.config import ServerConfig


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, ServerConfig]]:
    calls: list[tuple[Path, ServerConfig]] = []

    def fake_serve(model_dir: Path, config: ServerConfig, **kw: Any) -> None:
        calls.append((Path(model_dir), config))

    monkeypatch.setattr(dmeta_embed.serve, "serve", fake_serve)
    return calls


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    (tmp_path / MANIFEST_NAME).write_text("{}")  # served_folder only looks for the file
    return tmp_path


def invoke(model: Path | str, env: dict[str, str | None], *args: str) -> Any:
    return CliRunner(env=env).invoke(cli, ["serve", "-m", str(model), *args])


def test_key_from_default_variable(started: list, exported: Path) -> None:
    res = invoke(exported, {"DMETA_EMBED_API_KEY": "s3cret"}, "--host", "0.0.0.0")
    assert res.exit_code == 0, res.output
    assert started[0] == (exported, started[0][1]) and started[0][1].api_key == "s3cret"
    assert "without an API key" not in res.output


def test_no_key_when_default_variable_unset_or_empty(started: list, exported: Path) -> None:
    for env in ({"DMETA_EMBED_API_KEY": ""}, {"DMETA_EMBED_API_KEY": None}):
        res = invoke(exported, env, "--host", "0.0.0.0")
        assert res.exit_code == 0, res.output
        assert "without an API key" in res.output and "DMETA_EMBED_API_KEY" in res.output
    assert [config.api_key for _, config in started] == [None, None]


def test_named_variable_wins(started: list, exported: Path) -> None:
    res = invoke(exported, {"DMETA_EMBED_API_KEY": "default", "MY_KEY": "mine"}, "--api-key-env", "MY_KEY")
    assert res.exit_code == 0, res.output
    assert started[0][1].api_key == "mine"


def test_folder_without_config_is_left_to_the_runtime(tmp_path: Path) -> None:
    # neither an export nor a Hugging Face model: Embedder.load says what is missing
    assert served_model.served_folder(tmp_path, "auto") == tmp_path


def test_hub_id_without_exporter_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(feature: str) -> None:
        raise MissingDependencyError("torch", "export")

    monkeypatch.setattr("dmeta_embed._optional.require_feature", missing)
    with pytest.raises(
        MissingDependencyError, match=r"dmeta-embed\[export\].*org/model is not an exported folder"
    ):
        served_model.served_folder(Path("org/model"), "auto")


def test_model_folder_exported_once_into_cache(
    tiny_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    res = invoke(tiny_src, {}, "--variant", "fp32")
    assert res.exit_code == 0, res.output
    served = started[0][0]
    assert served.parent == tmp_path / "cache" / "dmeta-embed" / "exports"
    assert served.name.endswith("--fp32") and (served / MANIFEST_NAME).is_file()
    assert (served / "model.onnx").is_file() and not (served / "model.int8.onnx").exists()

    def no_second_export(*a: Any, **kw: Any) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr("dmeta_embed.export.export_model", no_second_export)
    res = invoke(tiny_src, {}, "--variant", "fp32")
    assert res.exit_code == 0, res.output
    assert started[1][0] == served
