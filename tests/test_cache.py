"""The export cache (``dmeta_embed.cache``): what ``--model`` names, the key, export once and reuse,
two resolvers at once, a failed export, a base install. Hub ids cannot be fetched here: their
exports are a fake that copies the tiny export; a local folder's export is the real one."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dmeta_embed import cache
from dmeta_embed.cache import Kind, locate, resolve_model
from dmeta_embed.errors import ExportError, MissingDependencyError, ModelLoadError
from dmeta_embed.runtime import Embedder
from tests.helpers import FakeExport, model_folder

TEXTS = ["维生素C可以预防感冒吗", "a short English query", ""]


def no_export(model: str, output: Path, revision: str | None) -> None:
    raise AssertionError(f"exported {model} again")


def entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# -- what --model names, and the key ----------------------------------------------------------------------


def test_what_model_names(tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache"
    exported = locate(tiny_export, cache_dir=root)
    assert (exported.kind, exported.folder, exported.needs_export) == (Kind.EXPORTED, tiny_export, False)
    folder = locate(model_folder(tmp_path / "My Model"), cache_dir=root, cpu_class="amx")
    assert folder.kind is Kind.FOLDER and folder.needs_export and folder.name == "My Model"
    assert folder.folder.parent == root and folder.key.startswith("My-Model-") and len(folder.key) == 21
    hub = locate("DMetaSoul/Dmeta-embedding", cache_dir=root, cpu_class="amx")
    assert hub.kind is Kind.HUB and hub.key.startswith("DMetaSoul--Dmeta-embedding-")
    assert locate("bert-base-chinese", cache_dir=root).kind is Kind.HUB
    # what is not a hub id is a path, and a missing path is "not found", never a hub lookup
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "empty").mkdir()
    for missing in ("./nowhere", str(tmp_path / "nowhere"), "~/surely/not/here", "out/m", "a/b/c"):
        with pytest.raises(ModelLoadError, match="model folder not found"):
            locate(missing, cache_dir=root)
    with pytest.raises(ModelLoadError, match="model folder not found"):
        locate(Path("org/name"), cache_dir=root)  # a Path is a folder
    with pytest.raises(ModelLoadError, match="is a file"):
        locate("a-file", cache_dir=root)
    with pytest.raises(ModelLoadError, match=r"no manifest\.json.*no config\.json"):
        locate("empty", cache_dir=root)
    assert not root.exists()  # locating writes nothing


def test_key_changes_with_revision_version_cpu_class_and_files(tmp_path: Path) -> None:
    def key(model: str | Path, **kw: object) -> str:
        args: dict = {"version": "1.0", "cpu_class": "amx", **kw}
        return locate(model, args.pop("revision", None), tmp_path / "cache", **args).key

    base = key("org/name")
    assert base == key("org/name")  # the same source on the same machine: the same entry
    others = [
        key("org/name", revision="v2"),
        key("org/name", version="1.1"),
        key("org/name", cpu_class="avx2"),
        key("org/other"),
    ]
    assert len({base, *others}) == 5
    src = model_folder(tmp_path / "m")
    before = key(src)
    assert key(src) == before
    weights = src / "model.safetensors"
    weights.write_bytes(b"other weights")  # another size
    edited = key(src)
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same size, another mtime
    touched = key(src)
    (src / ".git").mkdir()  # hidden files are not the model's
    (src / ".git" / "HEAD").write_text("ref")
    assert len({before, edited, touched}) == 3 and key(src) == touched
    copy = tmp_path / "elsewhere" / "m"
    shutil.copytree(src, copy)
    assert key(copy) != touched  # another path


def test_default_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # beside OpenVINO's compiled-model cache (dmeta-embed/openvino), never inside it
    assert cache.default_cache_dir() == tmp_path / "xdg" / "dmeta-embed" / "exports"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.default_cache_dir() == Path.home() / ".cache" / "dmeta-embed" / "exports"
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "mine"))
    assert locate("org/name").folder.parent == tmp_path / "mine"
    assert locate("org/name", cache_dir=tmp_path / "arg").folder.parent == tmp_path / "arg"


# -- export once, reuse ------------------------------------------------------------------------------------


def test_hub_id_is_exported_once_with_its_revision(
    tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeExport(tiny_export)
    monkeypatch.setattr(cache, "run_export", fake)
    lines: list[str] = []
    root = tmp_path / "cache"
    folder = resolve_model("org/name", "v1.2", root, progress=lines.append)
    assert folder == locate("org/name", "v1.2", root).folder and (folder / "manifest.json").is_file()
    assert [(m, r) for m, _, r in fake.calls] == [("org/name", "v1.2")]
    assert fake.calls[0][1].parent.parent == root  # built inside the cache, then moved into place
    assert f"exporting it once into {folder}" in lines[0] and "minute" in lines[0]
    assert lines[-1].startswith("exported org/name in ")
    made = json.loads((root / f"{folder.name}.json").read_text())
    assert made["model"] == "org/name" and made["revision"] == "v1.2" and made["kind"] == "hub"
    assert set(made) >= {"dmeta-embed", "cpu_class", "export_seconds"}
    assert entries(root) == sorted([folder.name, f"{folder.name}.json", f"{folder.name}.lock"])
    monkeypatch.setattr(cache, "run_export", no_export)
    assert resolve_model("org/name", "v1.2", root, progress=lines.append) == folder
    assert len(lines) == 2  # a reuse says nothing
    # a later process loads the entry with the runtime alone
    code = (
        "import sys; from dmeta_embed import Embedder\n"
        f"e = Embedder.load('org/name', revision='v1.2', cache_dir={str(root)!r}, variant='fp32')\n"
        f"assert e.path.name == {folder.name!r}, e.path\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_model_folder_exports_once_and_loads_like_its_export(
    tiny_src: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The real export, with the default variants, from Embedder.load of a transformers folder."""
    root = tmp_path / "cache"
    ours = logging.getLogger("dmeta_embed")
    saved = ours.level
    ours.setLevel(logging.WARNING)  # as the CLI leaves it without -v
    try:
        e = Embedder.load(tiny_src, variant="fp32", cache_dir=root)
    finally:
        ours.setLevel(saved)
    err = capfd.readouterr().err
    entry = locate(tiny_src, cache_dir=root).folder
    assert e.path == entry and f"exporting it once into {entry}" in err and "exported " in err
    stages = [r for r in caplog.records if r.name == "dmeta_embed.export" and r.levelno == logging.INFO]
    assert any("done in" in r.getMessage() for r in stages)  # the stage lines were let through
    assert logging.getLogger("dmeta_embed.export").level == logging.NOTSET  # and the level restored
    direct = Embedder.load(entry, variant="fp32")
    assert np.array_equal(e.encode(TEXTS), direct.encode(TEXTS))
    monkeypatch.setattr(cache, "run_export", no_export)
    again = Embedder.load(str(tiny_src), variant="fp32", cache_dir=root)
    assert again.path == entry and np.array_equal(again.encode(TEXTS), direct.encode(TEXTS))
    assert "exporting" not in capfd.readouterr().err


def test_stage_lines_reach_stderr_where_logging_is_not_set_up(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(logging.root, "handlers", [])  # a library caller that configured nothing
    stages = logging.getLogger("dmeta_embed.export")
    with cache._stages_shown(True):
        stages.info("fusion: done in 1.0 s")
    stages.info("after the export")
    with cache._stages_shown(False):
        stages.info("progress=None")
    assert capfd.readouterr().err == "dmeta-embed export: fusion: done in 1.0 s\n"
    assert not stages.handlers


# -- an entry made without an engine --------------------------------------------------------------------------


def engines(monkeypatch: pytest.MonkeyPatch, **why: str | None) -> None:
    """What the export's builders say is installed here: ``int8_ov="needs nncf"`` or None."""
    from dmeta_embed.export.builders import BUILDERS
    from dmeta_embed.manifest import Precision

    for name, reason in why.items():
        monkeypatch.setattr(BUILDERS[Precision(name.replace("_", "-"))], "unavailable", lambda r=reason: r)


def test_an_entry_made_without_an_engine_is_exported_again_once_it_is_installed(
    tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The installed engines are not in the key: the entry says what it skipped, and an export
    that can build one of those now replaces it whole (the old entry in place meanwhile)."""
    root = tmp_path / "cache"
    fake = FakeExport(tiny_export)
    monkeypatch.setattr(cache, "run_export", fake)
    engines(monkeypatch, int8_ov="needs nncf", bf16=None)
    folder = resolve_model("org/name", cache_dir=root, progress=None)
    made = json.loads((root / f"{folder.name}.json").read_text())
    assert made["variants"] == ["fp32", "fp16", "int8", "bf16"] and made["skipped"] == {
        "int8-ov": "needs nncf"
    }
    source = locate("org/name", cache_dir=root)
    assert cache.newly_buildable(source) == [] and not cache.must_export(source)
    monkeypatch.setattr(cache, "run_export", no_export)
    assert resolve_model("org/name", cache_dir=root, progress=None) == folder  # still no nncf
    # nncf installed: exported again, the old entry served until the new one is moved in
    engines(monkeypatch, int8_ov=None)
    assert locate("org/name", cache_dir=root).folder == folder  # the same key
    assert cache.newly_buildable(source) == ["int8-ov"] and cache.must_export(source)
    seen: list[bool] = []

    def again(model: str, output: Path, revision: str | None) -> None:
        seen.append((folder / "manifest.json").is_file())
        fake(model, output, revision)

    monkeypatch.setattr(cache, "run_export", again)
    lines: list[str] = []
    assert resolve_model("org/name", cache_dir=root, progress=lines.append) == folder
    assert seen == [True] and len(fake.calls) == 2
    assert f"the cached export {folder} has no int8-ov" in lines[0]
    made = json.loads((root / f"{folder.name}.json").read_text())
    assert made["variants"] == ["fp32", "fp16", "int8", "int8-ov", "bf16"] and made["skipped"] == {}
    assert entries(root) == sorted([folder.name, f"{folder.name}.json", f"{folder.name}.lock"])
    assert (folder / "manifest.json").is_file()
    monkeypatch.setattr(cache, "run_export", no_export)
    assert resolve_model("org/name", cache_dir=root, progress=None) == folder  # once


def test_where_the_export_cannot_run_an_entry_is_used_as_it_is(
    tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runtime-only install (an image without the exporter) serves an entry another one made,
    whatever it skipped; so is an entry that does not say what it skipped."""
    root = tmp_path / "cache"
    monkeypatch.setattr(cache, "run_export", FakeExport(tiny_export))
    engines(monkeypatch, int8_ov=None, bf16="this CPU has no native bf16")
    folder = resolve_model("org/name", cache_dir=root, progress=None)
    engines(monkeypatch, bf16=None)
    source = locate("org/name", cache_dir=root)
    assert cache.newly_buildable(source) == ["bf16"]
    monkeypatch.setitem(sys.modules, "torch", None)  # no export extra here
    monkeypatch.setattr(cache, "run_export", no_export)
    assert cache.variants_here() is None and cache.newly_buildable(source) == []
    assert resolve_model("org/name", cache_dir=root, progress=None) == folder
    # an entry made before entries said what they skipped: used as it is
    made = json.loads((root / f"{folder.name}.json").read_text())
    del made["skipped"]
    (root / f"{folder.name}.json").write_text(json.dumps(made))
    monkeypatch.delitem(sys.modules, "torch")
    assert cache.variants_here() is not None and cache.newly_buildable(source) == []


# -- concurrency and failure ---------------------------------------------------------------------------------


def test_concurrent_resolvers_export_once(
    tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeExport(tiny_export, delay=0.3)
    fake.gate = threading.Event()
    monkeypatch.setattr(cache, "run_export", fake)
    root = tmp_path / "cache"
    lines: list[str] = []
    results: list[Path] = []

    def resolve() -> None:
        results.append(resolve_model("org/name", cache_dir=root, progress=lines.append))

    threads = [threading.Thread(target=resolve) for _ in range(4)]
    for t in threads:
        t.start()
    end = time.monotonic() + 30
    while sum("waiting for another process" in line for line in lines) < 3:  # all queued on the lock
        assert time.monotonic() < end, lines
        time.sleep(0.01)
    fake.gate.set()
    for t in threads:
        t.join(60)
    assert len(fake.calls) == 1 and len(results) == 4 and len(set(results)) == 1
    folder = results[0]
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in tiny_export.iterdir())
    assert sum("using the export another process made" in line for line in lines) == 3
    assert not [p for p in root.iterdir() if ".partial-" in p.name]


def test_failed_export_leaves_no_entry_and_the_next_call_retries(
    tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    source = locate("org/name", cache_dir=root)
    monkeypatch.setattr(cache, "run_export", FakeExport(tiny_export, fail=True))
    with pytest.raises(ExportError, match="the fake export failed"):
        resolve_model("org/name", cache_dir=root, progress=None)
    assert entries(root) == [f"{source.key}.lock"]  # no entry, no json, no partial folder
    # a crash (no chance to clean up) leaves a partial folder: the next holder of the lock removes it
    (root / f".{source.key}.partial-crashed").mkdir()
    good = FakeExport(tiny_export)
    monkeypatch.setattr(cache, "run_export", good)
    assert resolve_model("org/name", cache_dir=root, progress=None) == source.folder
    assert len(good.calls) == 1 and (source.folder / "manifest.json").is_file()
    assert entries(root) == sorted([source.key, f"{source.key}.json", f"{source.key}.lock"])


def test_without_the_export_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A base install: one line naming the extra and the two-step alternative, before anything
    is written; the quick check (the server's, before it binds its port) says the same."""
    src = model_folder(tmp_path / "m")
    root = tmp_path / "cache"
    monkeypatch.setitem(sys.modules, "torch", None)
    for call in (
        lambda: resolve_model(src, cache_dir=root),
        lambda: Embedder.load(src, cache_dir=root),
        lambda: cache.require_export(locate(src, cache_dir=root), quick=True),
    ):
        with pytest.raises(MissingDependencyError) as e:
            call()
        message = str(e.value)
        assert "pip install 'dmeta-embed[export]'" in message and "\n" not in message
        assert f"dmeta-embed export {src} -o DIR" in message and e.value.extra == "export"
    assert not root.exists()


def test_cli_model_option_takes_a_hub_id_revision_and_cache_dir(
    tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from dmeta_embed.cli import cli

    fake = FakeExport(tiny_export)
    monkeypatch.setattr(cache, "run_export", fake)
    args = ["encode", "-m", "org/name", "--revision", "r1", "--variant", "fp32", *TEXTS]
    r = CliRunner().invoke(cli, [*args, "--cache-dir", str(tmp_path / "opt")])
    assert r.exit_code == 0, r.output
    got = np.array([json.loads(line)["embedding"] for line in r.stdout.splitlines()], dtype=np.float32)
    want = Embedder.load(tiny_export, variant="fp32").encode(TEXTS)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert [(m, r) for m, _, r in fake.calls] == [("org/name", "r1")]
    assert (locate("org/name", "r1", tmp_path / "opt").folder / "manifest.json").is_file()
    env = {cache.CACHE_ENV: str(tmp_path / "env")}
    r = CliRunner(env=env).invoke(cli, ["similarity", "-m", "org/name", "--variant", "fp32", "q", "-d", "a"])
    assert r.exit_code == 0, r.output
    assert [r for _, _, r in fake.calls] == ["r1", None] and (tmp_path / "env").is_dir()
