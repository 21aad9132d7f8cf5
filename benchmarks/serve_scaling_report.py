"""The scaling curve's summary and its markdown (``benchmarks.serve_scaling``'s report)."""

from __future__ import annotations

from typing import Any

from dmeta_embed.runtime.cpu import detect

#: the product's target: req/s at the load level on 16 cores at least this many times the 2-core figure
TARGET_SPEEDUP = 6.0
TARGET_CORES = (2, 16)


def _level(point: dict[str, Any], concurrency: int) -> dict[str, Any] | None:
    return next((lv for lv in point["levels"] if lv["concurrency"] == concurrency), None)


def load_level(result: dict[str, Any]) -> int:
    """The load's concurrency: the largest level asked (64 by default)."""
    return max(result["settings"]["concurrency"])


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Per mode: req/s at the load level by core count, each over the fewest cores measured;
    the 16-vs-2 target; ``auto`` over one worker at each core count; the lone request's p50."""
    c = load_level(result)
    curve: dict[str, dict[int, float]] = {}
    lone: dict[str, dict[int, float]] = {}
    for p in result["points"]:
        lv, one = _level(p, c), _level(p, 1)
        if lv:
            curve.setdefault(p["mode"], {})[p["cores"]] = lv["throughput_rps"]
        if one and c != 1:
            lone.setdefault(p["mode"], {})[p["cores"]] = one["p50_ms"]
    out: dict[str, Any] = {"concurrency": c, "rps": curve, "lone_p50_ms": lone, "speedup": {}, "target": {}}
    for mode, by in curve.items():
        base = min(by)
        if by[base] > 0:
            out["speedup"][mode] = {n: round(r / by[base], 2) for n, r in sorted(by.items())}
        lo, hi = TARGET_CORES
        if lo in by and hi in by and by[lo] > 0:
            ratio = round(by[hi] / by[lo], 2)
            out["target"][mode] = {"ratio": ratio, "met": ratio >= TARGET_SPEEDUP}
    if "auto" in curve and "one" in curve:
        out["auto_over_one"] = {
            n: round(curve["auto"][n] / curve["one"][n], 2)
            for n in sorted(curve["auto"])
            if n in curve["one"] and curve["one"][n] > 0
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["summary"]
    c = s["concurrency"]
    load = result["load_at_start"].get("loadavg")
    lines = [
        f"# `dmeta-embed serve` scaling: {result['model']}",
        "",
        f"{m['cpu_model']} (class `{detect().cpu_class.value}`; {m['usable_cpus']} usable CPUs "
        f"{m['affinity']}, {m['physical_cores']} physical cores; load average at start {load}). "
        f"Variant asked `{result['variant_asked']}`; {result['date']}; {result.get('elapsed_s', '?')} s in all. "
        f"Closed loop, short queries; the server pinned to the first N CPUs, the client on the rest "
        f"where there are any.",
        "",
        f"| cores | mode | workers × threads | variant | client | c={c} req/s | p50 / p99 ms | server cores busy "
        "| client cores busy | c=1 p50 / p99 ms | errors |",
        "|---:|---|---|---|---|---:|---|---:|---:|---|---:|",
    ]
    for p in sorted(result["points"], key=lambda p: (p["cores"], p["mode"])):
        lv, one = _level(p, c), _level(p, 1)
        client = ("shared" if p["client_shares_cores"] else p["client_cpus"]) + (
            f", {lv['client_procs']} procs" if lv else ""
        )
        errors = sum(x["errors"] for x in p["levels"])
        lines.append(
            f"| {p['cores']} | {p['mode']} | {p['workers']} × {p['threads']} | {p['variant']} | {client} | "
            + (
                f"{lv['throughput_rps']} | {lv['p50_ms']} / {lv['p99_ms']} | {lv['server_cores_busy']} | "
                f"{lv['client_cores_busy']} | "
                if lv
                else "- | - | - | - | "
            )
            + (f"{one['p50_ms']} / {one['p99_ms']}" if one and c != 1 else "-")
            + f" | {errors} |"
        )
    lines.append("")
    for mode, by in s["speedup"].items():
        lines.append(
            f"- {mode}: req/s at c={c} over {min(by)} cores: "
            + ", ".join(f"{n}: {r}×" for n, r in by.items())
        )
    for mode, t in s["target"].items():
        verdict = "met" if t["met"] else "missed"
        lines.append(
            f"- target ({mode}): {TARGET_CORES[1]} cores ≥ {TARGET_SPEEDUP:g}× the {TARGET_CORES[0]}-core req/s: "
            f"**{t['ratio']}×, {verdict}**"
        )
    if not s["target"]:
        lines.append(
            f"- target ({TARGET_CORES[1]} vs {TARGET_CORES[0]} cores ≥ {TARGET_SPEEDUP:g}×): not measured here"
        )
    if s.get("auto_over_one"):
        lines.append(
            "- auto over one worker, req/s: " + ", ".join(f"{n}: {r}×" for n, r in s["auto_over_one"].items())
        )
    for k in result["skipped"]:
        lines.append(f"- skipped: {k['cores']} cores {k['mode']}: {k['why']}")
    return "\n".join(lines) + "\n"
