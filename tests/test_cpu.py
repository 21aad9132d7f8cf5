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


def _cpuid_classes() -> set[CpuClass]:
    """The classes this CPU can be, from numpy's own CPUID probe (not /proc/cpuinfo, which the
    runtime reads): numpy sees no AMX and no VEX-encoded AVX-VNNI, so some answers are pairs."""
    import platform

    try:
        from numpy._core._multiarray_umath import __cpu_features__ as has
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__ as has

    if platform.machine().lower() in ("aarch64", "arm64"):
        return {CpuClass.ARM64}
    if has.get("AVX512VNNI"):
        return {CpuClass.AVX512_VNNI, CpuClass.AMX}
    if has.get("AVX512BW"):
        return {CpuClass.AVX512, CpuClass.AVX_VNNI}
    if has.get("AVX2"):
        return {CpuClass.AVX2, CpuClass.AVX_VNNI}
    return {CpuClass.X86}


def test_this_machine_is_classified() -> None:
    """The class read from /proc/cpuinfo agrees with what the CPU itself reports to numpy."""
    c = detect()
    if c.cpu_class == CpuClass.UNKNOWN:
        pytest.skip(f"no readable CPU flags on this machine ({c.describe()})")
    assert c.cpu_class in _cpuid_classes(), (c.describe(), _cpuid_classes())
    assert c is detect()  # read once
