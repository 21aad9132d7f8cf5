"""scripts/wheel_parts.py: split a real wheel into parts, verify, join, and refuse damaged parts."""

from __future__ import annotations

import ensurepip
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "wheel_parts.py"
#: the real onnxruntime-gpu parts docs/gpu.md prepares (git-ignored; verified when present)
ORT_GPU_PARTS = ROOT / "out" / "ortgpu" / "parts"


def real_wheel() -> Path:
    """A real wheel from this Python's own ensurepip bundle (no network needed)."""
    bundled = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("*.whl"))
    if not bundled:
        pytest.skip("this Python ships no ensurepip wheels")
    return max(bundled, key=lambda p: p.stat().st_size)


def tool(*args: object) -> subprocess.CompletedProcess[str]:
    # as a script, with -I: standard library only, as on the GPU host
    return subprocess.run(
        [sys.executable, "-I", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120
    )


@pytest.fixture()
def parts(tmp_path: Path) -> tuple[Path, Path]:
    wheel = real_wheel()
    folder = tmp_path / "parts"
    done = tool("split", wheel, folder, "--max-bytes", wheel.stat().st_size // 3)
    assert done.returncode == 0, done.stderr
    return wheel, folder


def test_split_join_round_trip_on_a_real_wheel(parts, tmp_path):
    wheel, folder = parts
    size = wheel.stat().st_size
    manifest = json.loads((folder / "wheel-parts.json").read_text())
    files = sorted(folder.glob("*.part*"))
    assert len(files) == len(manifest["parts"]) == 4  # size // 3 bytes each at most: four parts
    assert all(f.stat().st_size <= size // 3 for f in files)
    assert sum(f.stat().st_size for f in files) == size == manifest["size"]
    assert manifest["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    for p in manifest["parts"]:
        assert hashlib.sha256((folder / p["name"]).read_bytes()).hexdigest() == p["sha256"]

    assert tool("verify", folder).returncode == 0
    done = tool("join", folder, tmp_path / "joined")
    assert done.returncode == 0, done.stderr
    joined = Path(done.stdout.strip())
    assert joined == tmp_path / "joined" / wheel.name
    assert joined.read_bytes() == wheel.read_bytes()
    with zipfile.ZipFile(joined) as z:  # still a wheel: every member's CRC checks
        assert z.testzip() is None
        assert any(n.endswith(".dist-info/RECORD") for n in z.namelist())
    # joining again keeps the verified wheel (the GPU host may run the check twice)
    assert tool("join", folder, tmp_path / "joined").returncode == 0


def test_parts_are_equal_and_the_default_limit_is_60_mib(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import wheel_parts
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert wheel_parts.DEFAULT_MAX_BYTES == 60 * 2**20
    f = tmp_path / "x.whl"
    f.write_bytes(bytes(range(250)) * 4)  # 1000 bytes, at most 300 a part: four of 250
    m = wheel_parts.split(f, tmp_path / "p", max_bytes=300)
    assert [p["size"] for p in m["parts"]] == [250, 250, 250, 250]
    # the onnxruntime-gpu 1.31.1 wheel (255,569,273 bytes): five parts of about 48.7 MiB
    n, size = -(-255_569_273 // wheel_parts.DEFAULT_MAX_BYTES), -(-255_569_273 // 5)
    assert (n, size) == (5, 51_113_855)


def test_damaged_part_fails_with_its_name(parts, tmp_path):
    _, folder = parts
    manifest = json.loads((folder / "wheel-parts.json").read_text())
    second = folder / manifest["parts"][1]["name"]
    data = bytearray(second.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    second.write_bytes(bytes(data))

    done = tool("verify", folder)
    assert done.returncode == 1
    assert f"part 2 of 4 ({second.name})" in done.stderr and "sha256" in done.stderr
    assert "send this part again" in done.stderr
    done = tool("join", folder, tmp_path / "joined")
    assert done.returncode == 1 and "part 2 of 4" in done.stderr
    assert not list(tmp_path.glob("joined/*.whl*"))  # no wheel, no half-written file


def test_truncated_part_is_named(parts):
    _, folder = parts
    manifest = json.loads((folder / "wheel-parts.json").read_text())
    last = folder / manifest["parts"][3]["name"]
    last.write_bytes(last.read_bytes()[:-10])
    done = tool("verify", folder)
    assert done.returncode == 1
    assert "part 4 of 4" in done.stderr and "cut short" in done.stderr


def test_missing_parts_partial_and_full(parts):
    _, folder = parts
    manifest = json.loads((folder / "wheel-parts.json").read_text())
    (folder / manifest["parts"][2]["name"]).unlink()
    (folder / manifest["parts"][3]["name"]).unlink()
    partial = tool("verify", folder, "--partial")
    assert partial.returncode == 0 and "2 of 4 parts verified; still missing: [3, 4]" in partial.stdout
    full = tool("verify", folder)
    assert full.returncode == 1 and "missing part(s) 3, 4 of 4" in full.stderr


def test_parts_of_another_wheel_fail_the_whole_check(parts, tmp_path):
    # every part matches its own line, but the whole is not the wheel the manifest names
    _, folder = parts
    manifest = json.loads((folder / "wheel-parts.json").read_text())
    manifest["sha256"] = "0" * 64
    (folder / "wheel-parts.json").write_text(json.dumps(manifest))
    done = tool("join", folder, tmp_path / "joined")
    assert done.returncode == 1 and "parts from another split?" in done.stderr
    assert not (tmp_path / "joined" / manifest["wheel"]).exists()


def test_no_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for args in (("verify", tmp_path / "empty"), ("join", tmp_path / "nowhere", tmp_path / "o")):
        done = tool(*args)
        assert done.returncode == 1
        assert "wheel_parts: error:" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(
    not (ORT_GPU_PARTS / "wheel-parts.json").is_file(), reason="no prepared onnxruntime-gpu parts"
)
def test_prepared_onnxruntime_gpu_parts_verify():
    # the five parts docs/gpu.md sends to the GPU host: each under 60 MiB, and they verify
    manifest = json.loads((ORT_GPU_PARTS / "wheel-parts.json").read_text())
    assert manifest["wheel"].startswith("onnxruntime_gpu-1.31.1-cp312-cp312-manylinux")
    assert all(p["size"] <= 60 * 2**20 for p in manifest["parts"])
    done = tool("verify", ORT_GPU_PARTS)
    assert done.returncode == 0, done.stderr
