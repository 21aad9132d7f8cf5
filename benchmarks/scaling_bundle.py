#!/usr/bin/env python3
"""The carry bundle for the many-core serving run (docs/gpu.md, "Many-core serving"): one real
export's variant and the server's wheels, small enough to travel beside the working tree.

    python -m benchmarks.scaling_bundle build --from out/minilm -o out/scaling-carry   # here, with network
    python3 benchmarks/scaling_bundle.py unpack out/scaling-carry /tmp/scaling-model  # there, offline
    python3 benchmarks/scaling_bundle.py check out/scaling-carry                      # the size, again

The device tool sends the working tree and the carried paths, 64 MiB a call in all. The real
all-MiniLM-L6-v2 export does not fit whole (fp32 90 MB); its int8 file (58.7 MB: the 47 MB word
embedding table stays fp32) does, gzipped (-10 %; the tokenizer -65 %), beside the tree and the server's wheels. int8 is
what ``auto`` picks where OpenVINO is absent, and onnxruntime 1.30 (the host's) runs that graph
with the same vectors as 1.32, so no onnxruntime wheel (28 MB) is carried. The manifest is trimmed
to the carried variant: the runtime then loads it and nothing else (no fp32 file for the guard).

``unpack`` (standard library only: it runs on the host's own Python, nothing installed) checks
every file against ``carry.json``'s sha256 and writes the export folder. Exit status: 0 done,
1 a file failed its check or the bundle does not fit, 2 bad usage.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

MANIFEST = "carry.json"
FORMAT = 1
MiB = 1024 * 1024
#: what one device call carries: the working tree plus the carried paths
LIMIT = 64 * MiB
#: room kept for the tree to grow (and results written into it) between building and running
MARGIN = 3 * MiB
#: the host's own packages the server needs (its stack has them): not carried
HOST_HAS = frozenset({"numpy", "tokenizers", "onnxruntime"})
#: the device host's interpreter and platforms (docs/gpu.md)
PYTHON = "3.12"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")


class BundleError(Exception):
    """A carried file is missing or damaged, or the bundle does not fit; the message names it."""


@dataclass(frozen=True)
class Fit:
    """The bytes one device call would carry, against the limit less the margin."""

    tree: int
    bundle: int
    limit: int = LIMIT
    margin: int = MARGIN

    @property
    def total(self) -> int:
        return self.tree + self.bundle

    @property
    def left(self) -> int:
        """Bytes to spare under the limit less the margin (negative: it does not fit)."""
        return self.limit - self.margin - self.total

    @property
    def ok(self) -> bool:
        return self.left >= 0

    def describe(self) -> str:
        mib = lambda n: f"{n / MiB:.1f} MiB"  # noqa: E731
        verdict = "fits" if self.ok else "does NOT fit"
        return (
            f"tree {mib(self.tree)} + bundle {mib(self.bundle)} = {mib(self.total)}: {verdict} "
            f"under {mib(self.limit)} less a {mib(self.margin)} margin ({mib(self.left)} to spare)"
        )


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def tree_bytes(repo: Path) -> int:
    """What the device tool sends of ``repo`` besides the carried paths: tracked files and
    untracked ones git does not ignore."""
    names = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, capture_output=True, check=True
    ).stdout.split(b"\0")
    return sum((repo / n.decode()).stat().st_size for n in names if n and (repo / n.decode()).is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -- build (here) ---------------------------------------------------------------------------------------


def requirements(repo: Path) -> list[str]:
    """The server's requirements the host lacks: the package's own and its ``[server]`` extra
    (pyproject.toml), less :data:`HOST_HAS`, each pinned to the version installed here (tested)."""
    import importlib.metadata as md
    import re

    import tomllib  # Python 3.11+: the build runs here, never on the host

    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    out = []
    for req in [*project["dependencies"], *project["optional-dependencies"]["server"]]:
        name = re.match(r"[A-Za-z0-9_.-]+", req.split(";")[0].strip())
        assert name is not None, req
        if name.group(0).lower() in HOST_HAS:
            continue
        try:
            out.append(f"{name.group(0)}=={md.version(name.group(0))}")
        except md.PackageNotFoundError:
            out.append(req.split(";")[0].strip())
    return out


def download_wheels(reqs: list[str], dest: Path, python: str = PYTHON) -> None:
    """Binary wheels of ``reqs`` and their dependencies for the host's Python and platform."""
    plats = [a for p in PLATFORMS for a in ("--platform", p)]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary=:all:",
        "--implementation",
        "cp",
    ]
    cmd += ["--python-version", python, *plats, "-d", str(dest), *reqs]
    subprocess.run(cmd, check=True)


def build(
    export: Path, out: Path, variant: str = "int8", name: str | None = None, wheels: Path | None = None
) -> dict:
    """Write the bundle into ``out`` (replaced): ``variant`` of ``export`` (gzipped), its tokenizer
    and a manifest trimmed to it under ``model/``; the wheels of ``wheels`` (a folder) under
    ``wheels/``; ``carry.json``. Returns the carry manifest."""
    manifest = json.loads((export / "manifest.json").read_text())
    if variant not in manifest["variants"]:
        raise BundleError(f"{export}: no variant {variant!r} (it has {', '.join(manifest['variants'])})")
    entry = manifest["variants"][variant]
    trimmed = dict(manifest, variants={variant: entry})
    if out.exists():
        shutil.rmtree(out)
    (out / "model").mkdir(parents=True)
    files = []
    text = (json.dumps(trimmed, indent=2) + "\n").encode()
    (out / "model" / "manifest.json").write_bytes(text)
    files.append(_record(out, "manifest.json", "model/manifest.json", hashlib.sha256(text).hexdigest()))
    src = export / entry["file"]
    if sha256_of(src) != entry["sha256"]:
        raise BundleError(f"{src}: its sha256 does not match {export}/manifest.json")
    for file in (manifest["tokenizer"]["file"], entry["file"]):
        with (export / file).open("rb") as f, gzip.open(out / "model" / f"{file}.gz", "wb", 6) as g:
            shutil.copyfileobj(f, g, 1 << 20)
        sha, size = sha256_of(export / file), (export / file).stat().st_size
        files.append(_record(out, file, f"model/{file}.gz", sha, size))
    carried = []
    if wheels is not None:
        (out / "wheels").mkdir()
        for w in sorted(wheels.glob("*.whl")):
            shutil.copyfile(w, out / "wheels" / w.name)
            carried.append({"name": w.name, "size": w.stat().st_size, "sha256": sha256_of(w)})
    carry = {
        "format": FORMAT,
        "model": {
            "name": name or export.resolve().name,
            "source": manifest["source"].get("model"),
            "variant": variant,
            "files": files,
        },
        "wheels": carried,
    }
    (out / MANIFEST).write_text(json.dumps(carry, indent=2) + "\n")
    return carry


def _record(out: Path, name: str, stored: str, sha: str, size: int | None = None) -> dict:
    path = out / stored
    return {
        "name": name,
        "stored": stored,
        "sha256": sha,
        "size": size if size is not None else path.stat().st_size,
        "stored_size": path.stat().st_size,
    }


# -- unpack (there) -------------------------------------------------------------------------------------


def load(bundle: Path) -> dict:
    try:
        carry = json.loads((bundle / MANIFEST).read_text())
        if carry.get("format") != FORMAT:
            raise ValueError(f"format {carry.get('format')!r}, this tool reads {FORMAT}")
    except (OSError, ValueError) as e:
        raise BundleError(f"{bundle / MANIFEST}: unreadable ({e}); is {bundle} a scaling bundle?") from e
    return carry  # type: ignore[no-any-return]


def unpack(bundle: Path, dest: Path) -> Path:
    """Check every carried file, write the export folder into ``dest`` (replaced) and return it;
    the wheels are checked in place (pip installs them from ``bundle/wheels``)."""
    carry = load(bundle)
    for w in carry["wheels"]:
        path = bundle / "wheels" / w["name"]
        if not path.is_file() or sha256_of(path) != w["sha256"]:
            raise BundleError(f"{path}: missing or damaged (sha256 differs from {MANIFEST})")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in carry["model"]["files"]:
        src = bundle / f["stored"]
        if not src.is_file():
            raise BundleError(f"{src}: missing")
        opener = gzip.open if f["stored"].endswith(".gz") else open
        try:
            with opener(src, "rb") as r, (dest / f["name"]).open("wb") as w:
                shutil.copyfileobj(r, w, 1 << 20)
        except (OSError, EOFError) as e:
            raise BundleError(f"{src}: unreadable ({e}): damaged or cut short in transfer") from e
        if sha256_of(dest / f["name"]) != f["sha256"]:
            raise BundleError(f"{src}: unpacks to a file whose sha256 differs from {MANIFEST}'s")
    return dest


def extract_wheels(bundle: Path, site: Path) -> list[str]:
    """Unzip the bundle's wheels into ``site``: what ``pip install --no-deps --target`` does for
    wheels without ``.data`` scripts (all of the server's); for a host whose Python has no pip."""
    import zipfile

    site.mkdir(parents=True, exist_ok=True)
    names = []
    for w in load(bundle)["wheels"]:
        with zipfile.ZipFile(bundle / "wheels" / w["name"]) as z:
            z.extractall(site)
        names.append(w["name"])
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the bundle (here: needs the export and pip's index)")
    b.add_argument("--from", dest="export", type=Path, required=True, help="an export folder (real weights)")
    b.add_argument("-o", "--output", type=Path, default=Path("out/scaling-carry"))
    b.add_argument("--variant", default="int8")
    b.add_argument("--name", default="minilm", help="the model's results folder name")
    b.add_argument("--python", default=PYTHON, help="the host's Python for the wheels (default 3.12)")
    b.add_argument("--no-wheels", action="store_true", help="the model only")
    u = sub.add_parser("unpack", help="check the bundle and write its export folder")
    u.add_argument("bundle", type=Path)
    u.add_argument("dest", type=Path)
    x = sub.add_parser("extract-wheels", help="unzip the wheels into a folder (no pip on the host)")
    x.add_argument("bundle", type=Path)
    x.add_argument("site", type=Path)
    c = sub.add_parser("check", help="the bundle's size beside this working tree")
    c.add_argument("bundle", type=Path)
    args = p.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    try:
        if args.cmd == "unpack":
            print(unpack(args.bundle, args.dest))
            return 0
        if args.cmd == "extract-wheels":
            print("\n".join(extract_wheels(args.bundle, args.site)))
            return 0
        if args.cmd == "build":
            wheels = None
            if not args.no_wheels:
                wheels = args.output.parent / (args.output.name + "-wheels")
                shutil.rmtree(wheels, ignore_errors=True)
                download_wheels(requirements(repo), wheels, args.python)
            carry = build(args.export, args.output, args.variant, args.name, wheels)
            if wheels is not None:
                shutil.rmtree(wheels)
            print(
                f"{args.output}: {carry['model']['variant']} of {carry['model']['name']}, {len(carry['wheels'])} wheels"
            )
            for w in carry["wheels"]:
                print(f"  {w['name']} ({w['size'] / MiB:.2f} MiB)")
        fit = Fit(tree_bytes(repo), folder_bytes(args.output if args.cmd == "build" else args.bundle))
        print(fit.describe())
        print(json.dumps(asdict(fit) | {"total": fit.total, "left": fit.left}))
        return 0 if fit.ok else 1
    except BundleError as e:
        print(f"scaling_bundle: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
