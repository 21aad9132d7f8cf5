#!/usr/bin/env python3
"""Split a file (a wheel) into parts small enough for a size-limited transfer, and put it back.

    python3 scripts/wheel_parts.py split WHEEL DIR [--max-bytes N]   # parts + wheel-parts.json
    python3 scripts/wheel_parts.py verify DIR [--partial]            # every part, then the whole
    python3 scripts/wheel_parts.py join DIR OUT_DIR                  # verify, write OUT_DIR/<wheel>

Air-gapped GPU hosts are often reached through gateways that take files of about 60 MB at most,
while onnxruntime-gpu's wheel is 256 MB (docs/gpu.md). The manifest (``wheel-parts.json``)
records the sha256 and size of each part and of the whole file, so a part damaged or cut short in
transfer is named before anything is installed. ``verify --partial`` checks the parts that have
arrived so far and lists the missing ones (each transfer call can check its own part).

Standard library only: it runs on the host's own Python, with nothing installed.
Exit status: 0 verified, 1 a part or the whole failed verification (or is missing), 2 bad usage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path

MANIFEST = "wheel-parts.json"
#: 60 MiB: the per-file limit of the transfers this is for, less nothing (parts are made equal, so
#: a 255.6 MB wheel becomes five parts of 48.7 MiB and leaves room beside each part)
DEFAULT_MAX_BYTES = 60 * 1024 * 1024
FORMAT = 1
_CHUNK = 1 << 20


class PartsError(Exception):
    """A part is missing, damaged or does not match the manifest; the message names it."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def split(wheel: Path, folder: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """Cut ``wheel`` into the fewest equal parts of at most ``max_bytes`` each, written into
    ``folder`` beside the manifest; return the manifest."""
    if max_bytes < 1:
        raise PartsError(f"--max-bytes must be positive, got {max_bytes}")
    if not wheel.is_file():
        raise PartsError(f"{wheel}: no such file")
    size = wheel.stat().st_size
    if size == 0:
        raise PartsError(f"{wheel}: empty file, nothing to split")
    n = math.ceil(size / max_bytes)
    part_size = math.ceil(size / n)
    folder.mkdir(parents=True, exist_ok=True)
    whole = hashlib.sha256()
    parts = []
    with wheel.open("rb") as src:
        for i in range(1, n + 1):
            name = f"{wheel.name}.part{i}of{n}"
            data = src.read(part_size)
            whole.update(data)
            (folder / name).write_bytes(data)
            parts.append({"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {
        "format": FORMAT,
        "wheel": wheel.name,
        "size": size,
        "sha256": whole.hexdigest(),
        "parts": parts,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise PartsError(f"{folder}: no such folder of wheel parts")
    if not path.is_file():
        raise PartsError(f"{path}: missing (the folder holds no wheel-parts manifest)")
    try:
        m = json.loads(path.read_text())
        if m.get("format") != FORMAT:
            raise ValueError(f"format {m.get('format')!r}, this tool reads {FORMAT}")
        for p in m["parts"]:
            if Path(p["name"]).name != p["name"]:
                raise ValueError(f"part name {p['name']!r} is not a plain file name")
        int(m["size"]), str(m["sha256"]), str(m["wheel"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PartsError(f"{path}: unreadable manifest ({e})") from e
    return m  # type: ignore[no-any-return]


def check_parts(folder: Path, manifest: dict, partial: bool = False) -> list[int]:
    """Check each present part's size and sha256 against the manifest; return the numbers of
    missing parts (an error unless ``partial``). A damaged part is always an error."""
    parts = manifest["parts"]
    missing: list[int] = []
    for i, p in enumerate(parts, 1):
        path = folder / p["name"]
        label = f"part {i} of {len(parts)} ({p['name']})"
        if not path.is_file():
            missing.append(i)
            continue
        size = path.stat().st_size
        if size != p["size"]:
            raise PartsError(f"{label}: {size} bytes, the manifest says {p['size']} (cut short in transfer?)")
        digest = sha256_of(path)
        if digest != p["sha256"]:
            raise PartsError(
                f"{label}: sha256 {digest[:16]}… does not match the manifest's {p['sha256'][:16]}… "
                "(damaged in transfer: send this part again)"
            )
    if missing and not partial:
        names = ", ".join(str(i) for i in missing)
        raise PartsError(f"{folder}: missing part(s) {names} of {len(parts)} of {manifest['wheel']}")
    return missing


def _check_whole(manifest: dict, digest: str, size: int) -> None:
    if size != manifest["size"] or digest != manifest["sha256"]:
        raise PartsError(
            f"{manifest['wheel']}: the parts join to {size} bytes, sha256 {digest[:16]}…; "
            f"the manifest says {manifest['size']} bytes, {manifest['sha256'][:16]}… "
            "(parts from another split?)"
        )


def verify(folder: Path, partial: bool = False) -> list[int]:
    """Verify the parts, then (when all are there) the whole stream; return the missing parts."""
    m = load_manifest(folder)
    missing = check_parts(folder, m, partial)
    if not missing:
        h, size = hashlib.sha256(), 0
        for p in m["parts"]:
            data = (folder / p["name"]).read_bytes()
            h.update(data)
            size += len(data)
        _check_whole(m, h.hexdigest(), size)
    return missing


def join(folder: Path, out_dir: Path) -> Path:
    """Verify every part, write the wheel into ``out_dir`` under its own name, verify it, return it.
    A wheel already there with the manifest's sha256 is kept (idempotent); a failed join leaves none."""
    m = load_manifest(folder)
    target = out_dir / m["wheel"]
    check_parts(folder, m)
    if target.is_file() and target.stat().st_size == m["size"] and sha256_of(target) == m["sha256"]:
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    h, size = hashlib.sha256(), 0
    try:
        with tmp.open("wb") as dst:
            for p in m["parts"]:
                data = (folder / p["name"]).read_bytes()
                h.update(data)
                size += len(data)
                dst.write(data)
        _check_whole(m, h.hexdigest(), size)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split", help="cut WHEEL into parts inside DIR, with wheel-parts.json")
    s.add_argument("wheel", type=Path)
    s.add_argument("folder", type=Path)
    s.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    v = sub.add_parser("verify", help="check the parts in DIR (and the whole) against the manifest")
    v.add_argument("folder", type=Path)
    v.add_argument("--partial", action="store_true", help="missing parts are listed, not an error")
    j = sub.add_parser("join", help="verify the parts in DIR and write the wheel into OUT_DIR")
    j.add_argument("folder", type=Path)
    j.add_argument("out_dir", type=Path)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "split":
            m = split(a.wheel, a.folder, a.max_bytes)
            for p in m["parts"]:
                print(f"{a.folder / p['name']}  {p['size']} bytes  sha256 {p['sha256']}")
            print(f"{a.folder / MANIFEST}: {m['wheel']} {m['size']} bytes sha256 {m['sha256']}")
        elif a.cmd == "verify":
            missing = verify(a.folder, a.partial)
            n = len(load_manifest(a.folder)["parts"])
            if missing:
                print(f"{n - len(missing)} of {n} parts verified; still missing: {missing}")
            else:
                print(f"all {n} parts and the whole wheel verified")
        else:
            print(join(a.folder, a.out_dir))
    except PartsError as e:
        print(f"wheel_parts: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
