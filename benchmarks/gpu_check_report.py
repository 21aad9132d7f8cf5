"""The GPU check's verdicts and files: the CUDA fp16 targets (speed against torch fp16, query
latency, fp16 parity at 1024 tokens) met or missed, ``gpu_check.json`` and
``gpu_check.md`` (what docs/performance.md quotes). Plain data in, text out: tested on CPU."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

#: the fp16 bar every export enforces (manifest.BARS), asked of each parity length here
PARITY_BAR = 0.9999
SHAPES = {"dmeta": "Dmeta-shaped BERT-base", "tiny": "the tiny test BERT"}


def gpu_slug(name: str) -> str:
    """A results folder name from a GPU's name: 'NVIDIA H200' -> 'nvidia-h200'."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unknown-gpu"


def _get(report: dict[str, Any], *path: str) -> Any:
    cur: Any = report
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def speed_ratio(report: dict[str, Any], workload: str = "mixed") -> float | None:
    """Our tokens/s over the torch fp16 peer's on ``workload``; None when either is missing."""
    ours = _get(report, "ours", workload, "tokens_per_s")
    peer = _get(report, "torch_fp16", workload, "tokens_per_s")
    if not ours or not peer:
        return None
    return round(ours / peer, 2)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The CUDA fp16 targets for an H100/H200-class card, each with its value (None: not measured)."""
    rows = [
        ("fp16 + IO binding vs torch fp16, mixed texts", ">=", 2.0, speed_ratio(report, "mixed"), "×"),
        ("16-token query p50", "<=", 2.0, _get(report, "ours", "latency_ms", "p50"), " ms"),
        (
            "fp16 vs fp32 min cos at 1024 tokens",
            ">=",
            PARITY_BAR,
            _get(report, "parity", "1024", "min_cos"),
            "",
        ),
    ]
    out = []
    for name, op, bound, value, unit in rows:
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out.append({"target": name, "bound": f"{op} {bound}{unit}", "value": value, "met": met})
    return out


def failures(report: dict[str, Any]) -> list[str]:
    """Why the check fails: CUDA not really used, or fp16 parity under the bar at some length.
    (The speed targets are reported, not failed: they depend on the card.)"""
    out = list(_get(report, "providers", "problems") or [])
    if _get(report, "export", "error"):
        out.append(f"export: {report['export']['error']}")
    fusion = _get(report, "export", "fusion")
    if fusion is not None and not fusion.get("Attention"):
        # an unfused graph would measure onnxruntime's plain ops, not the product (export warns why)
        out.append(f"export: Attention was not fused ({fusion})")
    parity = report.get("parity") or {}
    if not parity:
        out.append("parity was not measured")
    for length, p in parity.items():
        if p["min_cos"] < PARITY_BAR:
            out.append(f"fp16 vs fp32 at {length} tokens: min cos {p['min_cos']:.6f} < {PARITY_BAR}")
    for system in ("ours", "torch_fp16"):
        err = _get(report, system, "error")
        if err:
            out.append(f"{system}: {err}")
    return out


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and digits:
        return f"{v:.{digits}f}"
    if isinstance(v, (int, float)):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:g}"
    return str(v)


def markdown(report: dict[str, Any]) -> str:
    """The human summary: what ran where, parity, speed beside the peer, targets."""
    gpu = report.get("gpu") or {}
    ort = report.get("onnxruntime") or {}
    v = report.get("versions") or {}
    lines = [
        f"# GPU check: {SHAPES.get(report.get('shape', ''), report.get('shape'))} (random weights) "
        f"on {gpu.get('name', report.get('device'))}",
        "",
        f"{report.get('date', '')}; verdict: **{'PASSED' if report.get('passed') else 'FAILED'}**; "
        f"{report.get('elapsed_s', '–')} s in all.",
        "",
        f"- GPU: {gpu.get('name', '–')}, {_fmt(gpu.get('memory_mib'))} MiB, driver {gpu.get('driver', '–')}, "
        f"compute capability {gpu.get('capability', '–')}",
        f"- onnxruntime {ort.get('version', '–')} from `{ort.get('file', '–')}`; CUDA libraries via "
        f"{ort.get('cuda_libraries', '–')}",
        "- " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- fp16 session providers: {_get(report, 'providers', 'session') or '–'}; nodes by provider: "
        f"{_get(report, 'providers', 'nodes_by_provider') or '–'}",
        f"- export: {_fmt(_get(report, 'export', 'seconds'))} s; fp16 validated on "
        f"{_get(report, 'export', 'fp16_validated_on') or '–'}; fused: {_get(report, 'export', 'fusion') or '–'}",
        "",
        "## fp16 on the GPU vs fp32 on the CPU (onnxruntime)",
        "",
        "| tokens | texts | min cos | mean cos | max abs diff |",
        "|---|---|---|---|---|",
    ]
    for length, p in (report.get("parity") or {}).items():
        lines.append(
            f"| {length} | {p['n']} | {p['min_cos']:.6f} | {p['mean_cos']:.6f} | {p['max_abs_diff']:.2e} |"
        )
    lines += [
        "",
        "## Speed (tokenising included) and memory",
        "",
        "| system | mixed tokens/s | query tokens/s | 16-token p50 ms | p99 ms | peak GPU MiB | min cos vs fp32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label in (
        ("ours", "ours: fp16, CUDA EP, IO binding"),
        ("torch_fp16", "torch fp16 (transformers)"),
    ):
        s = report.get(key) or {}
        if s.get("error"):
            lines.append(f"| {label} | failed: {s['error']} | | | | | |")
            continue
        lines.append(
            f"| {label} | {_fmt(_get(s, 'mixed', 'tokens_per_s'))} | {_fmt(_get(s, 'query', 'tokens_per_s'))} "
            f"| {_fmt(_get(s, 'latency_ms', 'p50'))} | {_fmt(_get(s, 'latency_ms', 'p99'))} "
            f"| {_fmt(_get(s, 'gpu_memory', 'peak_above_baseline_mib'))} "
            f"| {_fmt(_get(report, 'peer_parity', key, 'min_cos'), 6)} |"
        )
    lines += [
        "",
        "## Targets for an H100/H200-class card",
        "",
        "| target | bound | value | met |",
        "|---|---|---|---|",
    ]
    for t in report.get("targets") or targets(report):
        met = {True: "yes", False: "no", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {t['bound']} | {_fmt(t['value'])} | {met} |")
    fails = report.get("failures") or []
    if fails:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in fails]
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """``gpu_check.json`` (everything) and ``gpu_check.md`` (the summary) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    js, md = folder / "gpu_check.json", folder / "gpu_check.md"
    js.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    md.write_text(markdown(report))
    return js, md
