"""A result dict → ``bench.json``, ``bench.md`` (tables) and ``bench.png`` (throughput and latency)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

JSON_NAME, MD_NAME, PNG_NAME = "bench.json", "bench.md", "bench.png"


def write_report(result: dict[str, Any], output: str | Path) -> dict[str, Path]:
    """Write the three files into ``output`` (created); the PNG is skipped, with a note in the
    Markdown, when matplotlib is not installed."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_NAME, "md": out / MD_NAME}
    paths["json"].write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", "utf-8")
    try:
        plot(result, out / PNG_NAME)
        paths["png"] = out / PNG_NAME
    except ImportError:
        pass
    paths["md"].write_text(markdown(result, png_name=PNG_NAME if "png" in paths else None), "utf-8")
    return paths


def _f(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    v = m["versions"]
    libs = ", ".join(
        f"{k} {v[k]}"
        for k in ("onnxruntime", "torch", "openvino", "sentence-transformers", "optimum", "fastembed")
        if k in v
    )
    return (
        f"{m['cpu_model']}, {m['usable_cpus']} usable CPUs ({m['logical_cpus']} logical), "
        f"{m['clock_ghz']} GHz ({m['clock_from']}){', virtualized' if m['virtualized'] else ''}, "
        f"{m['memory_gb']} GB RAM; flags: {' '.join(m['flags'])}; {m['os']}, Python {m['python']}; {libs}"
    )


def _bar_cell(r: dict[str, Any]) -> str:
    return "–" if "meets_bar" not in r else ("yes" if r["meets_bar"] else "**below bar**")


def workload_table(result: dict[str, Any], w: str) -> list[str]:
    """Every system, fastest first; fidelity beside speed, and whether it meets the bar (a faster
    row below it is shown, marked, and not the "best peer" the ratios use)."""
    rows = sorted((r for r in result["results"] if r["workload"] == w), key=lambda r: -r["tokens_per_s"])
    lines = [
        "| system | variant | engine | tokens/s | min cos | mean cos | at bar | × best peer | texts/s | "
        "p50 ms | p95 ms | p99 ms | top-10 | load s | peak RSS MB | GFLOP/s | % fp32 peak | % own peak | CPU/wall |",
        "|" + "---|" * 19,
    ]
    for r in rows:
        lat = r["latency_ms"] or {}
        fid = r["fidelity"]
        sh = r["share"]
        name = f"**{r['name']}**" if r["ours"] else r["name"]
        lines.append(
            f"| {name} | {r['variant']} | {r['engine']} | {_f(r['tokens_per_s'])} | {fid['min_cos']:.5f} | "
            f"{fid['mean_cos']:.5f} | {_bar_cell(r)} | {_f(r.get('vs_best_peer'), 2)} | "
            f"{_f(r['sentences_per_s'], 1)} | {_f(lat.get('p50'), 1)} | {_f(lat.get('p95'), 1)} | "
            f"{_f(lat.get('p99'), 1)} | {fid.get('top10_agreement', 0):.3f} | {_f(r['load_s'], 1)} | "
            f"{_f(r['peak_rss_mb'])} | {_f(r['gflop_per_s'])} | {_pct(sh.get('of_fp32_peak'))} | "
            f"{_pct(sh.get('of_own_peak'))} ({sh.get('own_peak', '?')}) | {r.get('cpu_per_wall_median', '–')} |"
        )
    return lines


def _fid(r: dict[str, Any]) -> str:
    return f"(min/mean cos {r['fidelity']['min_cos']:.4f}/{r['fidelity']['mean_cos']:.4f})"


def summary_lines(result: dict[str, Any], w: str) -> list[str]:
    s = result["summary"].get(w, {})
    by = {(r["system"], r["workload"]): r for r in result["results"]}
    bar = s.get("bar")
    out = []
    if bar:
        out.append(
            f"Fidelity bar for every system: min cos ≥ {bar['min_cos']} and mean cos ≥ {bar['mean_cos']} "
            "against transformers + torch fp32 on these texts; best = fastest at the bar."
        )
    if "throughput_ratio" in s:
        bo, bp = by[(s["best_ours"], w)], by[(s["best_peer"], w)]
        out.append(
            f"Best of ours vs best peer at the bar (same run): **{s['best_ours']}** {_f(bo['tokens_per_s'])} "
            f"tokens/s {_fid(bo)} vs **{s['best_peer']}** {_f(bp['tokens_per_s'])} tokens/s {_fid(bp)} = "
            f"**{s['throughput_ratio']:.2f}×** throughput."
        )
    elif bar:
        missing = "no peer" if "best_peer" not in s else "no variant of ours"
        out.append(f"No ratio: {missing} met the bar on this workload.")
    below = [by[(k, w)] for k in s.get("faster_below_bar", [])]
    if below:
        out.append(
            "Faster than the best peer but below the bar (not counted): "
            + "; ".join(f"{r['system']} {_f(r['tokens_per_s'])} tokens/s {_fid(r)}" for r in below)
            + "."
        )
    if "p50_ratio" in s:
        fo, fp = by[(s["fastest_ours"], w)], by[(s["fastest_peer"], w)]
        out.append(
            f"Lowest single-text p50 at the bar: **{s['fastest_ours']}** {fo['latency_ms']['p50']:.1f} ms vs "
            f"**{s['fastest_peer']}** {fp['latency_ms']['p50']:.1f} ms = **{s['p50_ratio']:.2f}×** "
            "(> 1: ours is faster)."
        )
    return out


def weights_line(model: dict[str, Any]) -> str:
    """What the run's figures are worth: real weights, or the shape run on random ones."""
    if model.get("weights") == "random":
        return (
            "**shape run: random weights** with the model's real shape. Speed here is the shape's with "
            "every int8 node quantized; on real weights the export's fidelity search keeps some nodes "
            "in float and the speed changes with it, and fidelity on random weights says nothing about "
            "real ones: read the real-weights runs for both."
        )
    return "**real weights** (speed and fidelity are this model's)"


def auto_lines(model: dict[str, Any]) -> list[str]:
    """What ``auto`` loads from this folder on the benchmark's machine (bulk, and serve's choice)."""
    auto = model.get("auto") or {}
    return [
        f"- **auto here** ({use}): `{c['variant'] or 'refused'}`: {c['reason']}" for use, c in auto.items()
    ]


def markdown(result: dict[str, Any], png_name: str | None = PNG_NAME) -> str:
    model = result["model"]
    st = result["settings"]
    load = result["load"]
    timed = max((len(r["bulk_s"]) for r in result["results"]), default=st["repeats"])
    # the exported folder's name (minilm, mpnet, dmeta-shaped): sources can be named just "model"
    title = Path(str(model.get("export_dir") or model["source"].get("model"))).name
    shape_run = " (shape run, random weights)" if model.get("weights") == "random" else ""
    lines = [
        f"# dmeta-embed benchmark: {title}{shape_run}",
        "",
        f"- **Weights**: {weights_line(model)}",
        *auto_lines(model),
        f"- **Date**: {result['created']} (run took {result['wall_seconds']:.0f} s)",
        f"- **Machine**: {machine_line(result)}",
        f"- **Load** before: `{load['before']['uptime'] or load['before']['loadavg']}`; "
        f"after: `{load['after']['uptime'] or load['after']['loadavg']}` (a shared machine: quote ratios, "
        "not absolute times)",
        f"- **Model**: {model['layers']} layers, hidden {model['hidden']}, FFN {model['intermediate']}, "
        f"dim {model['dim']}, max length {model['max_length']}, {model['pooling']} pooling"
        f"{', normalised' if model['normalize'] else ''}; source `{model['source'].get('model')}`; "
        f"exported {model.get('export_created', '?')}"
        + (
            f"; code {result['code']['git_commit'][:10]}{' + local changes' if result['code'].get('dirty') else ''}"
            if result.get("code")
            else ""
        ),
        f"- **Settings**: {timed} timed passes over each workload (median) after {st['warmup_passes']} warm-up "
        f"pass; {st['latency_calls']} single-text calls per workload"
        + (
            f", both split over {st['passes']} alternating-order passes per system (a warm-up pass each)"
            if st.get("passes", 1) > 1
            else ""
        )
        + f"; {st['threads']} threads; batch size "
        f"{st['batch_size']} where the user picks one; each system in its own process; fidelity against "
        f"{st['reference']}",
    ]
    if model.get("provenance_note"):
        lines.append(f"- **Provenance**: {model['provenance_note']}")
    if result.get("command"):
        lines.append(f"- **Command**: `{result['command']}`")
    lines += [
        "",
        "## Workloads (tokens actually fed, after truncation)",
        "",
        "| workload | texts | tokens | min | p50 | mean | max | truncated | GFLOP per pass | MFLOP/token |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w, s in result["workloads"].items():
        lines.append(
            f"| {w} | {s['n_texts']} | {s['tokens_total']:,} | {s['tokens_min']} | {s['tokens_p50']} | "
            f"{s['tokens_mean']} | {s['tokens_max']} | {s['n_truncated']} | {s['gflop']} | "
            f"{result['physical']['flops_per_token'][w]} |"
        )
    for w in result["workloads"]:
        lines += ["", f"## {w}", "", *workload_table(result, w), ""]
        lines += summary_lines(result, w)
    skipped = [s for s in result["systems"] if s["status"] != "ok"]
    if skipped:
        lines += ["", "## Not measured", "", "| system | variant | status | reason |", "|---|---|---|---|"]
        for s in skipped:
            reason = (s.get("reason") or s.get("error") or "").replace("|", "/").replace("\n", " ")
            lines.append(f"| {s['name']} | {s['variant']} | {s['status']} | {reason[:300]} |")
    notes = [s for s in result["systems"] if s.get("note")]
    if notes:
        lines += ["", "Notes: " + "; ".join(f"`{s['key']}`: {s['note']}" for s in notes) + "."]
    ph = result["physical"]
    peaks = ", ".join(f"{k} {v['gops']:,.0f} GOP/s ({v['unit']})" for k, v in ph["peaks"].items())
    lines += [
        "",
        "## Physical limit",
        "",
        "FLOPs count the matrix products of real tokens only (padding excluded; MFLOP/token in the "
        "workload table; GFLOP/s = FLOPs of one pass / median pass time). "
        f"Estimated peaks for {ph['cores']} cores at {ph['clock_ghz']} GHz ({ph['clock_from']}): {peaks}. "
        f'These are estimates: {ph["note"]}. "% own peak" compares each system with the peak of its precision '
        '(int8 → AMX-INT8, bf16 → AMX-BF16 where present). "CPU/wall": CPU-seconds the system\'s '
        f"process used per wall-second of bulk encoding (median); about {ph['cores']} means it had the "
        "cores to itself, much less means it waited for them (other work on the machine) or ran serial code.",
    ]
    if png_name:
        lines += ["", f"![throughput and latency]({png_name})"]
    return "\n".join(lines) + "\n"


def _label(r: dict[str, Any]) -> str:
    return f"{r['name']} · {r['variant']}" + (" · BELOW BAR" if r.get("meets_bar") is False else "")


def _color(r: dict[str, Any]) -> str:
    return "#d62728" if r["ours"] else "#7f7f7f"  # ours red, peers grey


def plot(result: dict[str, Any], path: Path) -> None:
    """Per workload: tokens/s bars (left) and single-text p50 with p95 whiskers (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(result["workloads"])
    n_sys = max(1, len({r["system"] for r in result["results"]}))
    fig, axes = plt.subplots(
        len(workloads), 2, figsize=(13, 0.42 * n_sys * len(workloads) + 1.6), squeeze=False
    )
    for i, w in enumerate(workloads):
        rows = sorted((r for r in result["results"] if r["workload"] == w), key=lambda r: r["tokens_per_s"])
        ax = axes[i][0]
        ax.barh([_label(r) for r in rows], [r["tokens_per_s"] for r in rows], color=[_color(r) for r in rows])
        for y, r in enumerate(rows):
            ax.text(r["tokens_per_s"], y, f" {r['tokens_per_s']:,.0f}", va="center", fontsize=7)
        ax.set_title(f"{w}: throughput (tokens/s, higher is better)", fontsize=9)
        ax.tick_params(labelsize=7)
        ax = axes[i][1]
        lat = [r for r in rows if r["latency_ms"]]
        p50 = [r["latency_ms"]["p50"] for r in lat]
        p95 = [r["latency_ms"]["p95"] - r["latency_ms"]["p50"] for r in lat]
        ax.barh(
            [_label(r) for r in lat],
            p50,
            xerr=[[0] * len(lat), p95],
            color=[_color(r) for r in lat],
            error_kw={"elinewidth": 0.8},
        )
        ax.set_title(f"{w}: one-text latency, ms (p50 bar, p95 whisker; lower is better)", fontsize=9)
        ax.tick_params(labelsize=7)
        if len(lat) == len(rows):  # same rows, same order: the left panel's labels serve both
            ax.set_yticklabels([])
    m = result["machine"]
    fig.suptitle(
        f"dmeta-embed (red) vs peers (grey): {m['cpu_model']}, {m['usable_cpus']} CPUs, "
        f"{result['created'][:10]}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Re-render bench.md and bench.png from a bench.json: ``python -m benchmarks.report FILE``."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m benchmarks.report path/to/bench.json")
    src = Path(args[0])
    for name, path in write_report(json.loads(src.read_text("utf-8")), src.parent).items():
        print(f"wrote {path}" if name != "json" else f"rewrote {path}")


if __name__ == "__main__":
    main()
