"""``python -m benchmarks``: the benchmark's command line, run from a source checkout.

It lives here, not in the installed ``dmeta-embed`` CLI: the harness is repository tooling (it
stays out of the wheel), and the product never imports it.
"""

from __future__ import annotations

from pathlib import Path

import click

from dmeta_embed.cli.options import number_option
from dmeta_embed.manifest import Precision


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model",
    "-m",
    "model",
    envvar="DMETA_EMBED_MODEL",
    default=None,
    help="Exported folder, or a Hugging Face folder / hub id (exported first, once, into the cache).",
)
@click.option(
    "--variants", default=None, help="Comma-separated variants of ours (default: all in the folder)."
)
@click.option(
    "--workload",
    "workloads",
    multiple=True,
    default=("mixed", "query"),
    show_default=True,
    type=click.Choice(["query", "passage", "long", "mixed", "all"]),
    help="Repeat for several.",
)
@click.option(
    "--peers/--no-peers",
    default=False,
    show_default=True,
    help="Also measure the peers (transformers, sentence-transformers, optimum, OpenVINO, fastembed).",
)
@click.option(
    "--systems",
    default=None,
    help="Comma-separated key patterns to run, e.g. 'dmeta-embed:int8,st:*' (see --list-systems).",
)
@click.option("--list-systems", is_flag=True, help="Print the system keys and exit.")
@click.option(
    "--output",
    "-o",
    default="bench-results",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for bench.json, bench.md and bench.png.",
)
@number_option("--repeats", "Timed passes per workload (median reported), after one warm-up pass.", default=3)
@number_option(
    "--latency-calls",
    "Single-text calls per workload for p50/p95/p99.",
    default=200,
    kind=click.IntRange(min=0),
)
@number_option(
    "--texts",
    "Texts per workload (default: built-in sizes, see benchmarks/run.py).",
    kind=click.IntRange(min=2),
    dest="n_texts",
)
@number_option("--threads", "Threads for every system (default: CPUs available).")
@number_option("--batch-size", "Batch size for peers where the user picks one.", default=32)
@click.option(
    "--source",
    default=None,
    help="HF folder the peers and the reference load (default: the manifest's source).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where exports of the model and of the peers are kept (default: out/bench-cache/<model>).",
)
@number_option(
    "--passes",
    "Measure each system this many times, alternating order (A…Z, Z…A), repeats and latency calls "
    "split between passes: evens out drifting load on a shared machine.",
    default=1,
)
@number_option("--timeout", "Seconds per system.", default=1800, kind=click.FloatRange(min=1))
def bench(
    model: str,
    variants: str | None,
    workloads: tuple[str, ...],
    peers: bool,
    systems: str | None,
    list_systems: bool,
    output: Path,
    repeats: int,
    latency_calls: int,
    n_texts: int | None,
    threads: int | None,
    batch_size: int,
    source: str | None,
    cache_dir: Path | None,
    passes: int,
    timeout: float,
) -> None:
    """Benchmark our variants (and with --peers the tools users would otherwise pick) in one run."""
    from .run import DEFAULT_SIZES, WORKLOADS, Settings, run_benchmark
    from .systems import our_systems, peer_systems

    if list_systems:
        for s in our_systems([p.value for p in Precision]) + peer_systems():
            click.echo(f"{s.key:22} {s.name} · {s.variant} · {s.engine}")
        return
    if not model:
        raise click.UsageError("Missing option '--model' / '-m' (or set DMETA_EMBED_MODEL).")
    names = list(WORKLOADS) if "all" in workloads else list(dict.fromkeys(workloads))
    sizes = {w: n_texts for w in WORKLOADS} if n_texts else dict(DEFAULT_SIZES)
    settings = Settings(
        repeats=repeats,
        latency_calls=latency_calls,
        batch_size=batch_size,
        threads=threads,
        sizes=sizes,
        timeout_s=timeout,
        passes=passes,
    )
    result = run_benchmark(
        model,
        output,
        variants=[v.strip() for v in variants.split(",")] if variants else None,
        workloads=names,
        peers=peers,
        patterns=[p.strip() for p in systems.split(",")] if systems else None,
        settings=settings,
        source=source,
        cache_dir=cache_dir,
        command=_bench_command(click.get_current_context()),
        log=lambda m: click.echo(m, err=True),
    )
    for w, s in result["summary"].items():
        if "throughput_ratio" in s:
            click.echo(
                f"{w}: {s['best_ours']} vs {s['best_peer']} (both at the fidelity bar): "
                f"{s['throughput_ratio']:.2f}× tokens/s"
                + (
                    f", p50 {s['p50_ratio']:.2f}× ({s['fastest_ours']} vs {s['fastest_peer']})"
                    if "p50_ratio" in s
                    else ""
                )
            )
    click.echo(f"wrote {output}/bench.json, bench.md, bench.png")


def _bench_command(ctx: click.Context) -> str:
    """The command line that reproduces this run (options that differ from their defaults)."""
    import shlex

    parts = ["python", "-m", "benchmarks"]
    for p in ctx.command.params:
        value = ctx.params.get(p.name or "")
        if value == p.default or value in (None, False) or not isinstance(p, click.Option):
            continue
        flag = p.opts[-1] if p.opts[-1].startswith("--") else p.opts[0]
        if p.is_flag:
            parts.append(flag)
        else:
            for v in value if isinstance(value, tuple) else (value,):
                parts += [flag, str(v)]
    return shlex.join(parts)


def main() -> None:
    """Run :func:`bench`; library errors become one ``Error:`` line, as in ``dmeta-embed``."""
    from dmeta_embed.cli import run

    run(bench, prog_name="python -m benchmarks")
