"""``serve --ray`` against plain ``serve`` processes: the same load as ``serve_load`` (short
queries, closed loop, base64) on one machine.

    python -m benchmarks.investigations.serve_ray --model out/minilm --concurrency 32,64

Two services of the same CPUs, measured one after the other:

- ``ray x N``: ``serve --ray --replicas N --replica-cpus 1`` (a local Ray started by the server:
  N replicas of one thread each behind Ray's ingress, ``--ingress``: HAProxy, ``serve --ray``'s
  default, or ``python``, Ray's Python proxy);
- ``N x serve``: N plain ``serve --workers 1 --threads 1`` processes, each pinned to its own core
  with ``taskset`` (where it exists; ``--no-plain-pin``: not pinned, sharing every core as Ray's
  replicas do), the clients dealt out among them; their req/s is the sum.

``--modes ray`` or ``--modes plain`` measures one of the two only.

The clients share the cores with the servers (loopback). CPU per request counts every process
a server started (Ray's proxy, controller, GCS and raylet included). Writes
``benchmarks/results/<model>/<cpu class>/serve_<tag>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..machine import results_dir, serve_environment
from ..timing import cpu_seconds, rss_mb
from .serve_load import Server, markdown, run_level


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it (Ray's processes are the server's descendants)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in (Path("/proc") / str(p) / "task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            total += cpu_seconds(p)
        except (OSError, IndexError):  # gone between listing and reading
            pass
    return total


def tree_rss_mb(pid: int) -> float:
    return round(sum(rss_mb(p) or 0.0 for p in tree(pid)), 1)


async def wait_replicas(server: Server, n: int, timeout: float = 180) -> Any:
    """``/info`` once ``n`` replicas run."""
    end = time.monotonic() + timeout
    while True:
        info = await server.info()
        if info.get("replicas", {}).get("count") == n:
            return info
        if time.monotonic() > end:
            raise RuntimeError(f"{n} replicas did not start: {info.get('replicas')}")
        await asyncio.sleep(1)


async def measure(
    servers: list[Server], args: argparse.Namespace, mode: str, cpu_of: Any
) -> list[dict[str, Any]]:
    levels = []
    for c in args.concurrency:
        level = await run_level(servers, c, args.seconds, args.max_requests, cpu_of=cpu_of)
        print(
            f"  {mode:14} c={c:<3} {level['throughput_rps']:8.1f} req/s  p50 {level['p50_ms']:7.2f} ms  "
            f"p99 {level['p99_ms']:7.2f} ms  errors {level['errors']}",
            flush=True,
        )
        levels.append(level)
    return levels


async def ray_mode(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    extra = ["--max-wait-ms", str(args.max_wait_ms), "--ray", "--replicas", str(args.replicas)]
    server = Server(args.model, args.variant, extra, workdir / "ray.log")
    try:
        await server.ready(timeout=240)
        info = await wait_replicas(server, args.replicas)
        levels = await measure([server], args, f"ray x{args.replicas}", tree_cpu_seconds)
        return {
            "server_args": extra,
            "rss_mb": tree_rss_mb(server.proc.pid),
            "info": info,
            "levels": levels,
            "exit_status": server.stop(timeout=120),
        }
    finally:
        if server.proc.poll() is None:
            server.proc.kill()


async def plain_mode(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    extra = ["--max-wait-ms", str(args.max_wait_ms), "--workers", "1", "--threads", "1"]
    pin = (
        args.plain_pin
        and shutil.which("taskset") is not None
        and len(os.sched_getaffinity(0)) >= args.replicas
    )
    cores = sorted(os.sched_getaffinity(0))
    servers = [
        Server(
            args.model,
            args.variant,
            extra,
            workdir / f"plain-{i}.log",
            prefix=("taskset", "-c", str(cores[i])) if pin else (),
        )
        for i in range(args.replicas)
    ]
    try:
        for s in servers:
            await s.ready()
        info = await servers[0].info()
        levels = await measure(servers, args, f"{args.replicas} x serve", cpu_seconds)
        return {
            "server_args": extra,
            "pinned": [f"core {cores[i]}" for i in range(args.replicas)] if pin else None,
            "rss_mb": round(sum(rss_mb(s.proc.pid) or 0.0 for s in servers), 1),
            "info": info,
            "levels": levels,
            "exit_status": max(s.stop() for s in servers),
        }
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.kill()


def ratios(load: dict[str, Any]) -> dict[str, Any]:
    """Ray's req/s and p50/p99 over the plain processes', per concurrency."""
    ray_levels, plain_levels = (
        next(v["levels"] for k, v in load.items() if k.startswith(p)) for p in ("ray", "plain")
    )
    out = {}
    for r, p in zip(ray_levels, plain_levels, strict=True):
        out[str(r["concurrency"])] = {
            "rps_ratio": round(r["throughput_rps"] / p["throughput_rps"], 3),
            "p50_ratio": round(r["p50_ms"] / p["p50_ms"], 3),
            "p99_ratio": round(r["p99_ms"] / p["p99_ms"], 3),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="export folder")
    p.add_argument("--variant", default="auto")
    p.add_argument("--replicas", type=int, default=2, help="Ray replicas = plain processes = cores")
    p.add_argument("--concurrency", default="32,64")
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level")
    p.add_argument("--max-requests", type=int, default=40000)
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    p.add_argument(
        "--ingress",
        choices=("haproxy", "python"),
        default="haproxy",
        help="Ray's ingress: HAProxy (RAY_SERVE_ENABLE_HA_PROXY=1) or Ray's Python proxy",
    )
    p.add_argument("--throughput-optimized", action="store_true", help="RAY_SERVE_THROUGHPUT_OPTIMIZED=1")
    p.add_argument(
        "--plain-pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin each plain process to its own core with taskset",
    )
    p.add_argument("--modes", default="ray,plain", help="which services to measure: ray, plain or both")
    p.add_argument("--tag", default=None)
    args = p.parse_args()
    modes = set(args.modes.split(","))
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    tag = args.tag or f"ray-{'haproxy-' if args.ingress == 'haproxy' else ''}{args.model.resolve().name}"
    # the server's Ray reads them when it starts (serve --ray sets what is not set)
    os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1" if args.ingress == "haproxy" else "0"
    os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1" if args.throughput_optimized else "0"
    run = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        pass

    result: dict[str, Any] = {
        "tag": tag,
        "model": args.model.resolve().name,
        "variant": args.variant,
        "ingress": args.ingress,
        "throughput_optimized": args.throughput_optimized,
        "plain_pin": args.plain_pin,
        # the Ray variables the caller set (they win over what serve --ray sets: ray_proxy.ray_env)
        "ray_variables": {k: v for k, v in sorted(os.environ.items()) if k.startswith("RAY_")},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "environment": serve_environment(),
    }
    with tempfile.TemporaryDirectory(prefix="serve-ray-") as tmp:
        workdir = Path(tmp)
        print("load:", flush=True)
        load = {}
        if "ray" in modes:
            load[f"ray x{args.replicas}"] = run(ray_mode(args, workdir))
        if "plain" in modes:
            load[f"plain {args.replicas} x serve"] = run(plain_mode(args, workdir))
    result["load"] = load
    text = markdown(result)
    plain = load.get(f"plain {args.replicas} x serve")
    pinned = (plain or {}).get("pinned")
    unpinned = "no (--no-plain-pin)" if not args.plain_pin else "no (taskset missing)"
    where = f"Plain processes pinned: {', '.join(pinned) if pinned else unpinned}."
    if modes != {"ray", "plain"}:
        write(result, tag, text + ("\n" + where + "\n" if plain else ""))
        return
    result["ray_over_plain"] = ratios(load)
    lines = [
        "",
        "## Ray Serve over the plain processes",
        "",
        "| concurrency | req/s | p50 | p99 |",
        "|---:|---:|---:|---:|",
    ]
    for c, r in result["ray_over_plain"].items():
        lines.append(f"| {c} | {r['rps_ratio']}× | {r['p50_ratio']}× | {r['p99_ratio']}× |")
    lines += [
        "",
        f"Ray's ingress: {'HAProxy' if args.ingress == 'haproxy' else 'the Python proxy'}"
        f"{', RAY_SERVE_THROUGHPUT_OPTIMIZED=1' if args.throughput_optimized else ''}. "
        f"{where} Ray replicas are "
        "not pinned (num_cpus reserves, it does not bind). CPU per request: every process of the service "
        "(Ray's included).",
    ]
    text += "\n".join(lines) + "\n"
    write(result, tag, text)


def write(result: dict[str, Any], tag: str, text: str) -> None:
    out = results_dir(result["model"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"serve_{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"serve_{tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
