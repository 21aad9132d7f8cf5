"""What ships and what a base install does: the wheel holds only ``dmeta_embed`` (no test or
benchmark fixtures), with an SPDX license and a build log free of deprecations; the extras pair
each engine right (``[cpu]``: onnxruntime and OpenVINO, ``[gpu]``: onnxruntime-gpu alone) and the
docs name only extras that exist; ``import dmeta_embed`` and ``--help`` load no onnxruntime; a
command whose extra is missing says which one in one line (the missing modules are simulated in a
subprocess)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_only_the_package(tmp_path: Path) -> None:
    # a copy of the sources: building in the checkout would write build/ and egg-info beside others' work
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("dmeta_embed", "benchmarks", "scripts", "tests"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-v",  # the build backend's own warnings are shown only with -v
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    # setuptools floods the log with ~40 lines when project.license is a TOML table
    assert "deprecat" not in (r.stdout + r.stderr).lower(), (r.stdout + r.stderr)[-3000:]
    (wheel,) = (tmp_path / "dist").glob("dmeta_embed-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"dmeta_embed"}
    assert not [n for n in names if n.startswith(("benchmarks/", "tests/", "scripts/"))]
    assert "dmeta_embed/py.typed" in names and "dmeta_embed/cli/__init__.py" in names
    # the random-model builder is repository tooling (tests/random_models.py), not product: it
    # imports torch, which the runtime never needs
    modules = {Path(n).stem for n in names if n.endswith(".py")}
    assert not modules & {"testing", "random_models", "conftest", "helpers"}, modules
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "dmeta-embed = dmeta_embed.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    # installed: only dmeta_embed lands in site-packages, and it imports from there with no
    # `benchmarks` beside it (the checkout is not on the path: another working directory)
    site = tmp_path / "site"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    installed = {p.name for p in site.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin"}
    assert installed == {"dmeta_embed"}, installed
    probe = (
        "import importlib.util, dmeta_embed; "
        "print(dmeta_embed.__file__); print(importlib.util.find_spec('benchmarks') is None)"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    where, no_benchmarks = r.stdout.split()
    assert Path(where).is_relative_to(site) and no_benchmarks == "True"


def _run(code: str, block: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where the modules in ``block`` cannot be imported."""
    prelude = (
        "import sys, importlib.util\n"
        f"BLOCK = {block!r}\n"
        "for m in BLOCK:\n"
        "    sys.modules[m] = None  # import m -> ImportError, as on an install without it\n"
        "_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, p=None: None if n.split('.')[0] in BLOCK else _find(n, p)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def _cli(args: list[str], block: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return _run(
        "from dmeta_embed.cli import main\n"
        f"sys.argv = ['dmeta-embed', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "print('onnxruntime loaded:', 'onnxruntime' in sys.modules)\n"
        "sys.exit(code)\n",
        block,
    )


def _extras() -> dict[str, list[Requirement]]:
    """pyproject's extras, each with the extras it names (``dmeta-embed[a,b]``) expanded in place."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    raw = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def expand(extra: str) -> list[Requirement]:
        out: list[Requirement] = []
        for line in raw[extra]:
            req = Requirement(line)
            if req.name == "dmeta-embed":
                for inner in sorted(req.extras):
                    out.extend(expand(inner))
            else:
                out.append(req)
        return out

    return {extra: expand(extra) for extra in raw}


# platform_machine as Linux / macOS / Windows report it
X86 = ("x86_64", "AMD64")
ARM = ("aarch64", "arm64")


def test_engine_extras_need_an_onnxruntime_that_fuses_transformers_5() -> None:
    """onnxruntime 1.30 fuses no Attention in transformers 5's BERT graph, 1.31 does (docs/gpu.md):
    [cpu], [gpu] and the GPU check's own install accept no onnxruntime older than 1.31."""
    extras = _extras()
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    gpu_check = re.findall(r"'(onnxruntime-gpu\[[^']*)'", script)
    assert gpu_check, "benchmarks/gpu_check.sh installs no onnxruntime-gpu"
    for extra, dist in (("cpu", "onnxruntime"), ("gpu", "onnxruntime-gpu")):
        reqs = [r for r in extras[extra] if r.name == dist]
        assert len(reqs) == 1, (extra, extras[extra])
        requirements = reqs + [Requirement(r) for r in gpu_check] if extra == "gpu" else reqs
        for req in requirements:
            assert not req.specifier.contains("1.30.0") and not req.specifier.contains("1.30.99"), req
            assert req.specifier.contains("1.31.0") and req.specifier.contains("1.31.1"), req


def test_cpu_installs_the_headline_engine() -> None:
    """``auto``'s first picks on AMX and AVX-512 (bf16, int8-ov) run on OpenVINO's own runtime, so
    the README's first install line, ``[cpu]``, brings it beside onnxruntime on x86 (not on arm64,
    where no OpenVINO variant is ranked first); ``[openvino]`` stays, the same requirement, for
    install lines written before."""
    extras = _extras()
    cpu = {r.name: r for r in extras["cpu"]}
    assert set(cpu) == {"onnxruntime", "openvino"}, extras["cpu"]
    ov = cpu["openvino"]
    assert ov.marker is not None
    assert all(ov.marker.evaluate({"platform_machine": m}) for m in X86), ov
    assert not any(ov.marker.evaluate({"platform_machine": m}) for m in ARM), ov
    # 2026.4: OpenVINO 2025.4 computed bf16 wrong on float-heavy graphs (docs/performance.md)
    assert ov.specifier.contains("2026.4.1") and not ov.specifier.contains("2025.4.1"), ov
    (alias,) = extras["openvino"]
    assert alias.name == "openvino" and alias.specifier == ov.specifier and alias.marker is None, alias
    assert cpu["onnxruntime"].marker is None


def test_gpu_never_brings_the_cpu_onnxruntime() -> None:
    """onnxruntime and onnxruntime-gpu install the same module, so the one installed last shadows
    the other: ``[gpu]`` holds onnxruntime-gpu alone, and no extra but ``[cpu]`` names the CPU
    wheel (so ``[gpu,server]``, ``[gpu,export]`` ... stay on CUDA), nor any but ``[gpu]`` the GPU one."""
    extras = _extras()
    assert [r.name for r in extras["gpu"]] == ["onnxruntime-gpu"], extras["gpu"]
    for extra, reqs in extras.items():
        names = {r.name for r in reqs}
        assert extra == "cpu" or "onnxruntime" not in names, (extra, names)
        assert extra == "gpu" or "onnxruntime-gpu" not in names, (extra, names)


def _docs() -> dict[str, str]:
    """README.md and docs/*.md by their path in the repository."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return {p.relative_to(ROOT).as_posix(): p.read_text() for p in files}


def test_docs_name_only_extras_that_exist() -> None:
    """Every ``dmeta-embed[...]`` in the README and docs/ installs; the README's first ``pip
    install`` takes ``[cpu]`` (the headline's engine), and ``make demo`` / ``make test`` stay in it."""
    extras = _extras()
    for name, text in _docs().items():
        for group in re.findall(r"dmeta-embed\[([^\]]*)\]", text):
            # "extra" itself is docs/development.md's placeholder for any of them
            missing = {e.strip() for e in group.split(",")} - set(extras) - {"extra"}
            assert not missing, (name, group)
    readme = (ROOT / "README.md").read_text()
    first = re.search(r"pip install [^\n]*", readme)
    assert first and re.search(r"dmeta-embed\[([^\]]*,)?cpu[,\]]", first.group()), first
    assert "make demo" in readme and "make test" in readme


def test_docs_quote_no_issue_numbers_or_clock_times() -> None:
    """The README and docs/ are for readers of the code, who cannot see the tracker or the sessions:
    no "issue 18" or "#18", and runs are identified by their date, not the time of day."""
    banned = re.compile(r"\bissues? \d+|(?<![\w/])#\d+\b|\bstop \d+|\b\d{1,2}:\d{2}\b", re.IGNORECASE)
    found = [
        f"{name}:{i}: {line.strip()}"
        for name, text in _docs().items()
        for i, line in enumerate(text.splitlines(), 1)
        if banned.search(line)
    ]
    assert not found, "\n".join(found)


def test_import_leaves_onnxruntime_out() -> None:
    r = _run(
        "import dmeta_embed\n"
        "assert 'onnxruntime' not in sys.modules, 'import dmeta_embed loaded onnxruntime'\n"
        "from dmeta_embed import Embedder, Manifest, MissingDependencyError\n"
        "assert Embedder.__name__ == 'Embedder'\n"
        # onnxruntime loads with the first onnxruntime variant, not with the class (runtime.engines)
        "assert 'onnxruntime' not in sys.modules, 'importing Embedder loaded onnxruntime'\n"
        "print('ok')\n"
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize(
    "args", [["--help"], ["export", "--help"], ["serve", "--help"], ["encode", "--help"]]
)
def test_help_loads_no_onnxruntime(args: list[str]) -> None:
    r = _cli(args)
    assert r.returncode == 0, r.stderr
    assert "Usage: dmeta-embed" in r.stdout and r.stdout.strip().endswith("onnxruntime loaded: False")


def test_help_works_on_a_base_install() -> None:
    r = _cli(["--help"], block=("onnxruntime", "torch", "starlette", "uvicorn"))
    assert r.returncode == 0 and "export" in r.stdout and "Traceback" not in r.stderr


CPU_LINE = "Error: onnxruntime is not installed; run: pip install 'dmeta-embed[cpu]'"
EXPORT_FIRST = (
    "Error: torch is not installed; run: pip install 'dmeta-embed[export]' (model is not an exported "
    "folder and exporting it needs [export]; or export it where that is installed, dmeta-embed export "
)


@pytest.mark.parametrize(
    "args, block, line",
    [
        # a real export: the engine is needed when the model loads (inspect needs none:
        # tests/test_encode_calls.py::test_cpu_choice_and_inspect_import_without_onnxruntime)
        (["encode", "-m", "{export}", "hello"], ("onnxruntime",), CPU_LINE),
        (["similarity", "-m", "{export}", "q", "-d", "d"], ("onnxruntime",), CPU_LINE),
        (["export", "{model}", "-o", "{out}"], ("onnxruntime",), CPU_LINE),
        (
            ["export", "{model}", "-o", "{out}"],
            ("torch",),
            "Error: torch is not installed; run: pip install 'dmeta-embed[export]'",
        ),
        (
            ["serve", "-m", "{model}"],
            ("starlette",),
            "Error: starlette is not installed; run: pip install 'dmeta-embed[server]'",
        ),
        # a model folder (not an export) is exported first: the same line, and the two-step way
        (["encode", "-m", "{model}", "--cache-dir", "{out}", "hi"], ("torch",), EXPORT_FIRST),
        (["serve", "-m", "{model}", "--cache-dir", "{out}"], ("torch",), EXPORT_FIRST),
    ],
    ids=["encode", "similarity", "export-cpu", "export-torch", "serve", "encode-export", "serve-export"],
)
def test_missing_extra_is_one_line(
    args: list[str], block: tuple[str, ...], line: str, tmp_path: Path, tiny_export: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # a model folder (export refuses it later: no weights)
    r = _cli([a.format(model=model, export=tiny_export, out=tmp_path / "out") for a in args], block=block)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(line), r.stderr
    assert not (tmp_path / "out").exists()


def _module_imports() -> dict[str, set[str]]:
    """Each module of the package → the package modules it imports when it is imported: top-level
    imports only (imports inside functions and ``if TYPE_CHECKING:`` are lazy), plus each imported
    module's parent packages, which Python runs first."""
    import ast

    import dmeta_embed

    root = Path(dmeta_embed.__file__).parent
    mods: dict[str, Path] = {}
    for f in root.rglob("*.py"):
        parts = ["dmeta_embed", *f.relative_to(root).with_suffix("").parts]
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph: dict[str, set[str]] = {}
    for mod, f in mods.items():
        pkg = mod if f.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
                name = ".".join(base + ([node.module] if node.module else []))
                deps.update(n for n in [name, *(f"{name}.{a.name}" for a in node.names)] if n in mods)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
        for d in list(deps):
            parts = d.split(".")
            deps.update(
                p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if not mod.startswith(p + ".")
            )
        graph[mod] = deps - {mod}
    return graph


def test_the_package_has_no_import_cycle() -> None:
    graph = _module_imports()
    # the scan sees real edges (so an empty graph cannot pass): the CLI's package imports its commands
    assert "dmeta_embed.cli.export" in graph["dmeta_embed.cli"]
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        seen[m] = 1
        for d in sorted(graph[m]):
            assert seen.get(d) != 1, "import cycle: " + " -> ".join([*path[path.index(d) :], d])
            if d not in seen:
                visit(d, [*path, d])
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m, [m])
