"""The serving scaling curve: ``dmeta-embed serve`` pinned to 2, 4, 8, 16 cores, ``--workers auto``
against one worker on every thread (``--workers 1 --threads N``), at concurrency 64 and 1.

    python -m benchmarks.serve_scaling --model /tmp/scaling-model --variant int8 --name minilm
    benchmarks/serve_scaling.sh --offline out/scaling-carry      # the lent 16-core host (docs/gpu.md)

For each core count N (``--cores``, capped at this process's CPUs) and each mode, one server runs
on the first N of this process's CPUs (its affinity set before it starts, as ``taskset -c``: the
server's ``auto`` rule then sizes from those N; ``runtime.workers``). The load client
(``benchmarks.scaling_client``, closed loop, short queries) runs on the remaining CPUs when there
are any, else on the same ones (said in each point); on a large machine several client processes
share the connections, so the client does not measure itself. Each point records req/s, p50/p99,
the workers and threads the server reports on ``/info``, the server's CPU seconds and the client's.

Results: ``benchmarks/results/<name>/<cpu class>/serve_scaling.{json,md}`` and, with ``$OUT`` set
(or ``--copy-to``), there too; rewritten after every point, so a run cut short keeps what it
measured. ``--budget-s`` caps the whole run: a point that would not fit is skipped and listed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .investigations.serve_load import Server
from .machine import load_snapshot, machine_info, results_dir
from .serve_scaling_report import markdown, summarize
from .timing import cpu_seconds, percentiles, rss_mb

REPO = Path(__file__).resolve().parents[1]
#: the server's modes: ``auto`` (the rule) and one worker on every thread of the pinned set
MODES = {"auto": lambda n: ["--workers", "auto"], "one": lambda n: ["--workers", "1", "--threads", str(n)]}
#: a client process's connections at most, when ``--client-procs auto``
MAX_CLIENT_PROCS = 4


@dataclass(frozen=True)
class Layout:
    """Which CPUs the server and the load client run on for one core count."""

    cores: int
    server: tuple[int, ...]
    client: tuple[int, ...]

    @property
    def shared(self) -> bool:
        return bool(set(self.server) & set(self.client))

    def describe(self) -> str:
        where = "the same CPUs (shared)" if self.shared else f"CPUs {cpulist(self.client)}"
        return f"server on CPUs {cpulist(self.server)}, client on {where}"


def cpulist(cpus: tuple[int, ...] | list[int]) -> str:
    """``0-3,8`` for (0, 1, 2, 3, 8): what ``taskset -c`` takes."""
    out: list[str] = []
    for c in sorted(cpus):
        if out and int(out[-1].split("-")[-1]) == c - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{c}"
        else:
            out.append(str(c))
    return ",".join(out)


def layout(cpus: list[int], n: int) -> Layout:
    """The server on the first ``n`` of ``cpus``, the client on the rest (all of them when none
    is left)."""
    cpus = sorted(cpus)
    server, rest = tuple(cpus[:n]), tuple(cpus[n:])
    return Layout(n, server, rest or tuple(cpus))


def core_counts(asked: list[int], available: int, order: str = "ends-first") -> list[int]:
    """The core counts to measure: ``asked`` capped at ``available``; ``ends-first`` puts the
    smallest and the largest first, so a run cut short still has the curve's two ends."""
    counts = sorted({max(1, min(c, available)) for c in asked})
    if order == "ends-first" and len(counts) > 2:
        return [counts[0], counts[-1], *counts[1:-1]]
    return counts


def client_procs(asked: str, lay: Layout, concurrency: int) -> int:
    """Client processes for one level: ``asked`` (a number), or ``auto``: one per two client
    CPUs, at most :data:`MAX_CLIENT_PROCS`, never more than the connections."""
    n = int(asked) if asked != "auto" else max(1, min(MAX_CLIENT_PROCS, len(lay.client) // 2))
    return max(1, min(n, concurrency))


def pinned(cpus: tuple[int, ...]) -> tuple[str, ...]:
    """An argv prefix that runs the rest of the argv on ``cpus`` (as ``taskset -c``, without
    needing it): the affinity is set, then the command is exec'd in the same process."""
    code = f"import os,sys; os.sched_setaffinity(0, {sorted(cpus)}); os.execv(sys.argv[1], sys.argv[1:])"
    return (sys.executable, "-c", code)


def topology(cpus: list[int]) -> dict[int, tuple[int, int]]:
    """Each CPU's (package, core) from sysfs: two CPUs of one core are hyperthreads."""
    out = {}
    for c in cpus:
        base = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            out[c] = (int((base / "physical_package_id").read_text()), int((base / "core_id").read_text()))
        except (OSError, ValueError):
            out[c] = (-1, c)
    return out


# -- one level: the client processes against a running server ----------------------------------------------


def measure(
    server: Server, lay: Layout, concurrency: int, procs: int, seconds: float, warmup: float, log: Path
) -> dict[str, Any]:
    shares = [concurrency // procs + (i < concurrency % procs) for i in range(procs)]
    clients = []
    with log.open("a") as err:
        for i, k in enumerate(shares):
            cmd = [*pinned(lay.client), sys.executable, "-m", "benchmarks.scaling_client"]
            cmd += ["--port", str(server.port), "--concurrency", str(k), "--seed", str(concurrency * 100 + i)]
            clients.append(
                subprocess.Popen(
                    cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
                )
            )
    try:
        for c in clients:
            assert c.stdout is not None
            if c.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a load client did not start (see {log})")
        measure_from = time.time() + 0.05 + warmup
        end = measure_from + seconds
        for c in clients:
            assert c.stdin is not None
            c.stdin.write(f"{measure_from} {end}\n")
            c.stdin.flush()
        time.sleep(max(0.0, measure_from - time.time()))
        cpu0 = cpu_seconds(server.proc.pid)
        time.sleep(max(0.0, end - time.time()))
        cpu = cpu_seconds(server.proc.pid) - cpu0
        outs = [_report(c.communicate(timeout=seconds + 120)[0], log) for c in clients]
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
    lat = [x for o in outs for x in o["latencies_ms"]]
    done = sum(o["done"] for o in outs)
    p = percentiles(lat) if lat else {"p50": float("nan"), "p99": float("nan")}
    client_cpu = sum(o["cpu_s"] for o in outs)
    return {
        "concurrency": concurrency,
        "client_procs": procs,
        "seconds": seconds,
        "requests": done,
        "errors": sum(o["errors"] for o in outs),
        "throughput_rps": round(done / seconds, 1),
        "p50_ms": round(p["p50"], 2),
        "p99_ms": round(p["p99"], 2),
        "server_cpu_s": round(cpu, 2),
        "server_cores_busy": round(cpu / seconds, 2),
        "client_cpu_s": round(client_cpu, 2),
        "client_cores_busy": round(client_cpu / seconds, 2),
    }


def _report(stdout: str, log: Path) -> dict[str, Any]:
    """A client's last line, its JSON report; a client that died mid-level wrote none."""
    lines = stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])  # type: ignore[no-any-return]
    except (IndexError, json.JSONDecodeError) as e:
        raise RuntimeError(f"a load client stopped without its report (see {log})") from e


# -- one point: a server, its levels -------------------------------------------------------------------------


def run_point(args: argparse.Namespace, lay: Layout, mode: str, workdir: Path) -> dict[str, Any]:
    extra = [*MODES[mode](lay.cores), *args.server_args]
    log = workdir / f"server-{lay.cores}-{mode}.log"
    t0 = time.monotonic()
    server = Server(args.model, args.variant, extra, log, prefix=pinned(lay.server))
    try:
        asyncio.run(server.ready(args.ready_timeout))
        ready_s = time.monotonic() - t0
        info = asyncio.run(server.info())
        levels = []
        for c in args.concurrency:
            secs = args.seconds if c > 1 else args.single_seconds
            procs = client_procs(args.client_procs, lay, c)
            level = measure(server, lay, c, procs, secs, args.warmup_s, log.with_suffix(".clients.log"))
            levels.append(level)
            print(
                f"  {lay.cores:>3} cores {mode:4} c={c:<3} {level['throughput_rps']:8.1f} req/s  "
                f"p50 {level['p50_ms']:7.2f} ms  p99 {level['p99_ms']:7.2f} ms  "
                f"server {level['server_cores_busy']:.2f} cores busy  errors {level['errors']}",
                flush=True,
            )
        rss = rss_mb(server.proc.pid)
        status = server.stop()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    workers = info.get("workers", {})
    return {
        "cores": lay.cores,
        "mode": mode,
        "server_args": ["--variant", args.variant, *extra],
        "server_cpus": cpulist(lay.server),
        "physical_cores": len({args.topology.get(c) for c in lay.server}),
        "client_cpus": cpulist(lay.client),
        "client_shares_cores": lay.shared,
        "workers": workers.get("count"),
        "threads": workers.get("threads"),
        "variant": info.get("variant"),
        "provider": info.get("provider"),
        "ready_s": round(ready_s, 2),
        "rss_mb": rss,
        "exit_status": status,
        "levels": levels,
        "wall_s": round(time.monotonic() - t0, 1),
    }


def estimate(points: list[dict[str, Any]], args: argparse.Namespace) -> float:
    """Seconds the next point may take: the slowest so far, else a guess from the settings."""
    if points:
        return max(p["wall_s"] for p in points)
    levels = sum(
        (args.seconds if c > 1 else args.single_seconds) + args.warmup_s + 3 for c in args.concurrency
    )
    return 20 + levels


def write(result: dict[str, Any], folders: list[Path]) -> None:
    result["summary"] = summarize(result)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "serve_scaling.json").write_text(json.dumps(result, indent=2) + "\n")
        (folder / "serve_scaling.md").write_text(markdown(result))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="an export folder")
    p.add_argument("--name", default=None, help="results folder name (default: the model folder's)")
    p.add_argument("--variant", default="auto")
    p.add_argument("--cores", default="2,4,8,16", help="core counts, capped at this process's CPUs")
    p.add_argument("--modes", default="auto,one", help="auto: --workers auto; one: --workers 1 --threads N")
    p.add_argument("--concurrency", default="64,1", help="levels: the load, then the lone request")
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level above 1")
    p.add_argument("--single-seconds", type=float, default=4.0, help="measured seconds at concurrency 1")
    p.add_argument("--warmup-s", type=float, default=1.0, help="unmeasured seconds before each level")
    p.add_argument(
        "--client-procs", default="auto", help="client processes per level (auto: see client_procs)"
    )
    p.add_argument("--order", choices=("ends-first", "ascending"), default="ends-first")
    p.add_argument(
        "--budget-s", type=float, default=420.0, help="the whole run; points that would not fit are skipped"
    )
    p.add_argument("--ready-timeout", type=float, default=180.0)
    p.add_argument(
        "--results-dir", type=Path, default=None, help="default benchmarks/results/<name>/<cpu class>"
    )
    p.add_argument("--copy-to", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    p.add_argument("--server-arg", dest="server_args", action="append", default=[])
    args = p.parse_args(argv)
    args.cores = [int(c) for c in args.cores.split(",")]
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        p.error(f"--modes: unknown {', '.join(sorted(unknown))} (auto, one)")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.name = args.name or args.model.resolve().name
    return args


def main(argv: list[str] | None = None) -> int:
    import tempfile

    args = parse(argv)
    start = time.monotonic()
    cpus = sorted(os.sched_getaffinity(0))
    args.topology = topology(cpus)
    counts = core_counts(args.cores, len(cpus), args.order)
    folders = [args.results_dir or results_dir(args.name)] + ([args.copy_to] if args.copy_to else [])
    result: dict[str, Any] = {
        "model": args.name,
        "model_folder": str(args.model),
        "variant_asked": args.variant,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info()
        | {"affinity": cpulist(cpus), "physical_cores": len(set(args.topology.values()))},
        "load_at_start": load_snapshot(),
        "settings": {
            k: getattr(args, k) for k in ("cores", "modes", "concurrency", "seconds", "single_seconds")
        }
        | {
            "warmup_s": args.warmup_s,
            "client_procs": args.client_procs,
            "budget_s": args.budget_s,
            "order": counts,
        },
        "points": [],
        "skipped": [],
    }
    print(
        f"{len(cpus)} CPUs ({cpulist(cpus)}); core counts {counts}; budget {args.budget_s:.0f} s", flush=True
    )
    with tempfile.TemporaryDirectory(prefix="serve-scaling-") as tmp:
        for n in counts:
            lay = layout(cpus, n)
            print(f"{n} cores: {lay.describe()}", flush=True)
            for mode in args.modes:
                elapsed = time.monotonic() - start
                if elapsed + estimate(result["points"], args) > args.budget_s:
                    result["skipped"].append(
                        {"cores": n, "mode": mode, "why": f"budget ({elapsed:.0f} s spent)"}
                    )
                    print(f"  {n} cores {mode}: skipped, the budget would be exceeded", flush=True)
                    continue
                try:
                    result["points"].append(run_point(args, lay, mode, Path(tmp)))
                except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
                    logs = [Path(tmp) / f"server-{n}-{mode}{x}.log" for x in ("", ".clients")]
                    tail = "\n".join(f.read_text()[-1000:] for f in logs if f.is_file())
                    result["skipped"].append({"cores": n, "mode": mode, "why": f"failed: {e}", "log": tail})
                    print(f"  {n} cores {mode}: FAILED: {e}\n{tail}", flush=True)
                result["elapsed_s"] = round(time.monotonic() - start, 1)
                write(result, folders)
    result["elapsed_s"] = round(time.monotonic() - start, 1)
    write(result, folders)
    print(markdown(result), flush=True)
    for f in folders:
        print(f"wrote {f}/serve_scaling.json and .md", flush=True)
    return 0 if result["points"] and not any(s["why"].startswith("failed") for s in result["skipped"]) else 1


if __name__ == "__main__":
    sys.exit(main())
