"""mteb scores of several variants of one exported folder, and each one's delta vs fp32.

    python -m benchmarks.investigations.mteb_variants --model out/dmeta --variants fp32,int8,int8-ov \\
        --benchmark "MTEB(cmn, v1)" --output benchmarks/results/dmeta

writes ``mteb_variants.json`` (every score) and ``mteb_variants.md`` (main score per task and
variant, delta vs fp32 in points). Needs ``pip install 'dmeta-embed[mteb]'`` and the tasks' data
(downloaded by mteb from the Hugging Face hub, or its cache). int8-ov runs where the ``openvino``
extra is installed (the same environment).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: scores are fractions in mteb; the table shows points (x100), as the leaderboard does
POINTS = 100.0


def run(
    folder: str | Path, variants: Sequence[str], tasks: Iterable[Any], **load_options: Any
) -> dict[str, Any]:
    """{variant: {task name: main score}} plus each variant's wall time, one mteb.evaluate per variant."""
    import mteb

    from dmeta_embed.integrations.mteb import DmetaEncoder

    tasks = list(tasks)
    scores: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for variant in variants:
        encoder = DmetaEncoder(folder, variant=variant, **load_options)
        t0 = time.perf_counter()
        result = mteb.evaluate(encoder, tasks, cache=None, show_progress_bar=False, co2_tracker=False)
        seconds[variant] = round(time.perf_counter() - t0, 1)
        scores[variant] = {r.task_name: float(r.get_score()) for r in result.task_results}
    return {
        "model": str(folder),
        "scores": scores,
        "seconds": seconds,
        "main_scores": {t.metadata.name: t.metadata.main_score for t in tasks},
    }


def deltas(scores: dict[str, dict[str, float]], base: str = "fp32") -> list[dict[str, Any]]:
    """One row per task: each variant's score and its delta vs ``base`` (in points), plus a mean row
    over the tasks every variant scored."""
    if base not in scores:
        raise ValueError(f"the base variant {base!r} was not run (ran: {', '.join(scores)})")
    tasks = [t for t in scores[base] if all(t in s for s in scores.values())]
    rows = []
    for task in tasks:
        row: dict[str, Any] = {"task": task}
        for variant, s in scores.items():
            row[variant] = s[task] * POINTS
            if variant != base:
                row[f"{variant} Δ"] = (s[task] - scores[base][task]) * POINTS
        rows.append(row)
    if rows:
        mean: dict[str, Any] = {"task": "mean"}
        for key in rows[0]:
            if key != "task":
                mean[key] = sum(r[key] for r in rows) / len(rows)
        rows.append(mean)
    return rows


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    if not rows:
        return f"# {title}\n\nno task was scored by every variant\n"
    keys = list(rows[0])
    lines = [f"# {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [str(r["task"])] + [f"{r[k]:+.2f}" if k.endswith("Δ") else f"{r[k]:.2f}" for k in keys[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Main score of each task in points (x100); Δ: the variant minus fp32."]
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], output: str | Path, base: str = "fp32") -> tuple[Path, Path]:
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rows = deltas(result["scores"], base)
    js, md = out / "mteb_variants.json", out / "mteb_variants.md"
    js.write_text(
        json.dumps(
            result | {"rows": rows, "created": time.strftime("%Y-%m-%d %H:%M")}, indent=2, ensure_ascii=False
        )
        + "\n",
        "utf-8",
    )
    md.write_text(markdown(rows, f"mteb scores by variant: {result['model']}"), "utf-8")
    return js, md


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--model", required=True, help="exported folder")
    p.add_argument("--variants", default="fp32,int8", help="comma-separated; fp32 first is the base")
    p.add_argument("--tasks", default="", help="comma-separated mteb task names")
    p.add_argument("--benchmark", default="", help='an mteb benchmark, e.g. "MTEB(cmn, v1)"')
    p.add_argument("--output", required=True, help="folder for mteb_variants.json / .md")
    a = p.parse_args(argv)
    import mteb

    if bool(a.tasks) == bool(a.benchmark):
        p.error("give exactly one of --tasks or --benchmark")
    tasks = (
        mteb.get_benchmark(a.benchmark).tasks
        if a.benchmark
        else mteb.get_tasks(tasks=[t.strip() for t in a.tasks.split(",") if t.strip()])
    )
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    js, md = write(run(a.model, variants, tasks), a.output)
    print(md.read_text("utf-8"))
    print(f"wrote {js} and {md}")


if __name__ == "__main__":
    main()
