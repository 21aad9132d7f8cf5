"""How ``serve`` starts, as the container images use it: the API key from DMETA_EMBED_API_KEY when
--api-key-env is not given (a model id or model folder exported into the cache: tests/test_cache.py).
The server itself is replaced: nothing binds a port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import dmeta_embed.serve
from dmeta_embed.cli import cli
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
    (tmp_path / MANIFEST_NAME).write_text("{}")  # the cache resolver only looks for the file
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
