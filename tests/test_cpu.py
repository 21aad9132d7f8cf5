"""CPU class detection from flags (every class, injected) and from this machine's cpuinfo."""

from __future__ import annotations

import pytest

from dmeta_embed.runtime.cpu import CpuClass, classify, cpu_info, detect, read_cpuinfo

SPR = "fpu avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
ZEN4 = "fpu avx2 fma avx512f avx512bw avx512_vnni avx512_bf16"
ZEN3 = "fpu sse4_2 avx avx2 fma vaes vpclmulqdq"
SKX = "fpu avx2 fma avx512f avx512dq avx512bw avx512vl"


@pytest.mark.parametrize(
    "flags,machine,want",
    [
        (SPR, "x86_64", CpuClass.AMX),
        (
            "avx2 avx512f avx512bw avx512_vnni amx_tile",
            "x86_64",
            CpuClass.AVX512_VNNI,
        ),  # AMX without its int8 part
        (ZEN4, "x86_64", CpuClass.AVX512_VNNI),
        ("avx2 fma avx_vnni", "x86_64", CpuClass.AVX_VNNI),
        (SKX, "x86_64", CpuClass.AVX512),
        (ZEN3, "x86_64", CpuClass.AVX2),
        (ZEN3, "AMD64", CpuClass.AVX2),
        ("fpu sse4_2 avx", "x86_64", CpuClass.X86),
        ("fp asimd asimddp", "aarch64", CpuClass.ARM64),
        (None, "arm64", CpuClass.ARM64),  # arm64 needs no flags
        (None, "x86_64", CpuClass.UNKNOWN),  # flags unreadable
        ("avx2 avx512_vnni", "ppc64le", CpuClass.UNKNOWN),
    ],
)
def test_classify(flags: str | None, machine: str, want: CpuClass) -> None:
    assert classify(frozenset(flags.split()) if flags is not None else None, machine) == want


def test_cpuinfo_first_block_and_arm_features(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654\n"
        f"flags\t\t: {ZEN4}\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    )
    c = cpu_info(read_cpuinfo(str(info)), "x86_64")
    assert (c.cpu_class, c.vendor, c.model) == (CpuClass.AVX512_VNNI, "AuthenticAMD", "AMD EPYC 9654")
    assert c.bf16 and c.int8_weights == "s8"
    assert (
        c.describe()
        == "avx512_vnni (AuthenticAMD AMD EPYC 9654; avx2 avx512f avx512bw avx512_vnni avx512_bf16)"
    )
    assert c.to_dict() == {
        "cpu_class": "avx512_vnni",
        "vendor": "AuthenticAMD",
        "model": "AMD EPYC 9654",
        "arch": "x86_64",
        "int8_weights": "s8",
    }
    arm = tmp_path / "cpuinfo-arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU implementer\t: 0x41\n")
    a = cpu_info(read_cpuinfo(str(arm)), "aarch64")
    assert a.cpu_class == CpuClass.ARM64 and a.int8_weights == "s8" and not a.bf16
    assert read_cpuinfo(str(tmp_path / "missing")) is None
    assert cpu_info(None, "x86_64").to_dict()["int8_weights"] == "untrusted"


def test_this_machine_is_classified() -> None:
    c = detect()
    assert c.cpu_class in set(CpuClass)  # which one depends on the machine running the suite
    assert c is detect()  # read once
