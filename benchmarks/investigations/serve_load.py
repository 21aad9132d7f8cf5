"""Load and soak test of ``dmeta-embed serve`` on loopback; bounded in requests and time.

    python -m benchmarks.investigations.serve_load         # out/minilm if present, else the tiny model
    python -m benchmarks.investigations.serve_load --model out/dmeta-shaped --soak-requests 2000

Load: short queries, closed loop, at concurrency 1, 8, 32, 64, with dynamic batching on (the
defaults) and off (``--max-wait-ms 0 --batch-size 1``). Soak: 10,000 requests of random lengths
with ~5% malformed ones, concurrency 64; every answer is checked against a direct ``encode`` of its
own inputs, the server's RSS is sampled, and the server must stop on SIGTERM with status 0.
Writes ``benchmarks/results/<model>/<cpu class>/serve_<tag>.json`` and ``.md``.

The client runs on the same cores as the server (that is what loopback means); figures are for
this machine under whatever else it runs, and the server's own CPU time is recorded beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..machine import results_dir, serve_environment
from ..metrics import cosines
from ..timing import cpu_seconds, percentiles, rss_mb
from .serve_client import Connection, json_body

HOST = "127.0.0.1"
CJK = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可也你说年而能下过子"
WORDS = [
    "embedding",
    "model",
    "query",
    "search",
    "vector",
    "server",
    "hong",
    "kong",
    "watch",
    "bank",
    "card",
    "weather",
    "cold",
    "vitamin",
    "how",
    "to",
    "the",
    "is",
    "what",
    "best",
]


# -- the server under test -----------------------------------------------------------------------------


class Server:
    """``dmeta-embed serve`` in a subprocess on a free loopback port."""

    def __init__(
        self, model: Path, variant: str, extra: list[str], log: Path, prefix: tuple[str, ...] = ()
    ) -> None:
        from tests.helpers import free_port, serve_command

        self.port = free_port(HOST)
        # prefix: e.g. ("taskset", "-c", "0") to pin the server to one core (serve_ray.py)
        cmd = [*prefix, *serve_command(model, self.port, variant, *extra, host=HOST)]
        self.log = log
        self.proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)

    async def ready(self, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                conn = Connection(HOST, self.port)
                reply = await conn.request("GET", "/ready")
                await conn.close()
                if reply.status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("server did not become ready")

    async def info(self) -> Any:
        """The server's ``/info`` (its variant, batching and workers)."""
        conn = Connection(HOST, self.port)
        reply = await conn.request("GET", "/info")
        await conn.close()
        return json.loads(reply.body)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit status (0 is a graceful stop)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9


# -- load: short queries at fixed concurrency ---------------------------------------------------------------


def short_query(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "".join(rng.choice(CJK) for _ in range(rng.randint(4, 16)))
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))


async def run_level(
    server: Server | list[Server],
    concurrency: int,
    seconds: float,
    max_requests: int,
    cpu_of: Any = cpu_seconds,
) -> dict[str, Any]:
    """Closed loop: ``concurrency`` clients, each sends its next query when the last one returns.
    Several servers: the clients are dealt out among them in turn (serve_ray.py: two processes
    measured as one service); ``cpu_of(pid)``: a server's CPU seconds so far."""
    servers = server if isinstance(server, list) else [server]
    rng = random.Random(concurrency)
    bodies = [
        json_body({"input": short_query(rng), "model": "m", "encoding_format": "base64"}) for _ in range(1000)
    ]
    conns = [Connection(HOST, servers[i % len(servers)].port) for i in range(concurrency)]

    async def warm(conn: Connection) -> None:
        for _ in range(2):
            await conn.request("POST", "/v1/embeddings", bodies[0])

    # connect and warm each connection outside the measurement, all at once: one after the other,
    # the first would sit idle past the server's keep-alive timeout (uvicorn: 5 s) while a slow
    # model warms the 64th, and be closed under the measurement
    await asyncio.gather(*(warm(c) for c in conns))
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    end = start + seconds
    cpu0 = sum(cpu_of(s.proc.pid) for s in servers)

    async def client(i: int, conn: Connection) -> None:
        nonlocal errors
        k = i
        while time.perf_counter() < end and len(latencies) < max_requests:
            body = bodies[k % len(bodies)]
            k += concurrency
            t = time.perf_counter()
            reply = await conn.request("POST", "/v1/embeddings", body)
            latencies.append((time.perf_counter() - t) * 1e3)
            errors += reply.status != 200

    await asyncio.gather(*(client(i, c) for i, c in enumerate(conns)))
    elapsed = time.perf_counter() - start
    cpu = sum(cpu_of(s.proc.pid) for s in servers) - cpu0
    for c in conns:
        await c.close()
    lat = percentiles(latencies) if latencies else {"p50": float("nan"), "p99": float("nan")}
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(lat["p50"], 2),
        "p99_ms": round(lat["p99"], 2),
        "server_cpu_ms_per_request": round(1000 * cpu / max(len(latencies), 1), 3),
    }


async def load(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    modes = {
        "batching": ["--max-wait-ms", str(args.max_wait_ms)],
        "one_at_a_time": ["--max-wait-ms", "0", "--batch-size", "1"],
    }
    if args.workers:  # batching on, one server per --workers value (docs/performance.md, "Serving: workers")
        modes = {
            f"workers={w}": ["--max-wait-ms", str(args.max_wait_ms), "--workers", w] for w in args.workers
        }
    out: dict[str, Any] = {}
    for mode, extra in modes.items():
        server = Server(args.model, args.variant, extra + args.server_args, workdir / f"load-{mode}.log")
        try:
            await server.ready()
            levels = []
            for c in args.concurrency:
                level = await run_level(server, c, args.seconds, args.max_requests)
                print(
                    f"  {mode:14} c={c:<3} {level['throughput_rps']:8.1f} req/s  p50 {level['p50_ms']:7.2f} ms  "
                    f"p99 {level['p99_ms']:7.2f} ms  errors {level['errors']}",
                    flush=True,
                )
                levels.append(level)
            out[mode] = {
                "server_args": extra + args.server_args,
                "rss_mb": rss_mb(server.proc.pid),
                "info": await server.info(),
                "levels": levels,
                "exit_status": server.stop(),
            }
        finally:
            if server.proc.poll() is None:
                server.proc.kill()
    return out


# -- soak: random lengths, malformed requests, exact checking ------------------------------------------------------


def random_text(rng: random.Random) -> str:
    r = rng.random()
    n = rng.randint(1, 40) if r < 0.7 else rng.randint(40, 200) if r < 0.95 else rng.randint(200, 600)
    if rng.random() < 0.5:
        return "".join(rng.choice(CJK) for _ in range(n))
    words: list[str] = []
    while sum(map(len, words)) + len(words) < n:
        words.append(rng.choice(WORDS))
    return " ".join(words)[:n]


#: malformed bodies and the status each must get: (path, raw body, status)
MALFORMED: list[tuple[str, bytes, int]] = [
    ("/v1/embeddings", b'{"input": [', 400),
    ("/v1/embeddings", b'{"input": []}', 400),
    ("/v1/embeddings", b'{"input": 42}', 400),
    ("/v1/embeddings", b'{"input": [101, 2023, 102]}', 400),
    ("/v1/embeddings", b'{"input": ["ok", "\\ud800"]}', 400),
    ("/v1/embeddings", b'{"input": "a", "dimensions": 7}', 400),
    ("/v1/embeddings", b"[]", 400),
    ("/v1/embeddings", json.dumps({"input": ["x" * 20000]}).encode(), 413),
    ("/embed", b'{"text": "wrong field"}', 422),
    ("/embed", b'{"inputs": "a", "normalize": "yes"}', 422),
]


def soak_plan(n: int, malformed_share: float, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    plan = []
    for i in range(n):
        if rng.random() < malformed_share:
            path, body, status = MALFORMED[i % len(MALFORMED)]
            plan.append({"kind": "malformed", "path": path, "raw": body, "status": status})
            continue
        texts = [random_text(rng) for _ in range(rng.randint(1, 4))]
        r = rng.random()
        if r < 0.4:
            plan.append(
                {
                    "kind": "float",
                    "path": "/v1/embeddings",
                    "texts": texts,
                    "raw": json_body({"input": texts, "model": "m"}),
                }
            )
        elif r < 0.8:
            plan.append(
                {
                    "kind": "base64",
                    "path": "/v1/embeddings",
                    "texts": texts,
                    "raw": json_body({"input": texts, "model": "m", "encoding_format": "base64"}),
                }
            )
        else:
            plan.append(
                {
                    "kind": "tei",
                    "path": "/embed",
                    "texts": texts,
                    "raw": json_body({"inputs": texts, "truncate": True}),
                }
            )
    return plan


def vectors_of(kind: str, payload: Any) -> np.ndarray:
    if kind == "tei":
        return np.asarray(payload, dtype=np.float32)
    data = payload["data"]
    if kind == "base64":
        return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data])
    return np.asarray([d["embedding"] for d in data], dtype=np.float32)


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    plan = soak_plan(args.soak_requests, args.malformed, seed=7)
    server = Server(
        args.model,
        args.soak_variant,
        ["--max-wait-ms", str(args.max_wait_ms)] + args.server_args,
        workdir / "soak.log",
    )
    try:
        await server.ready()
        replies: list[Any] = [None] * len(plan)
        statuses = [0] * len(plan)
        transport_errors = 0
        done = 0
        rss: list[tuple[int, float]] = []
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(plan)):
            queue.put_nowait(i)
        deadline = time.monotonic() + args.soak_timeout

        async def client() -> None:
            nonlocal done, transport_errors
            conn = Connection(HOST, server.port)
            while not queue.empty() and time.monotonic() < deadline:
                i = queue.get_nowait()
                item = plan[i]
                try:
                    reply = await conn.request("POST", item["path"], item["raw"])
                except (OSError, asyncio.IncompleteReadError):
                    transport_errors += 1
                    await conn.close()
                    conn = Connection(HOST, server.port)
                    continue
                statuses[i] = reply.status
                if item["kind"] != "malformed" and reply.status == 200:
                    replies[i] = vectors_of(item["kind"], reply.json())
                done += 1
            await conn.close()

        async def sampler() -> None:
            while True:
                rss.append((done, rss_mb(server.proc.pid) or 0.0))
                await asyncio.sleep(0.25)

        watch = asyncio.create_task(sampler())
        start = time.perf_counter()
        cpu0 = cpu_seconds(server.proc.pid)
        await asyncio.gather(*(client() for _ in range(args.soak_concurrency)))
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(server.proc.pid) - cpu0
        watch.cancel()
        rss.append((done, rss_mb(server.proc.pid) or 0.0))
        alive = server.proc.poll() is None
        exit_status = server.stop()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    return check_soak(args, plan, replies, statuses, transport_errors, rss, elapsed, cpu, alive, exit_status)


def check_soak(
    args: argparse.Namespace,
    plan: list[dict[str, Any]],
    replies: list[Any],
    statuses: list[int],
    transport_errors: int,
    rss: list[tuple[int, float]],
    elapsed: float,
    cpu: float,
    alive: bool,
    exit_status: int,
) -> dict[str, Any]:
    from dmeta_embed.runtime import Embedder

    print("  checking every answer against a direct encode ...", flush=True)
    model = Embedder.load(args.model, variant=args.soak_variant)
    unique = sorted({t for item in plan if item["kind"] != "malformed" for t in item["texts"]})
    ref = dict(zip(unique, model.encode(unique), strict=True))
    wrong = unexpected_status = 0
    worst = 1.0
    for item, got, status in zip(plan, replies, statuses, strict=True):
        if item["kind"] == "malformed":
            unexpected_status += status != item["status"]
            continue
        if status != 200 or got is None:
            unexpected_status += 1
            continue
        want = np.stack([ref[t] for t in item["texts"]])
        if got.shape != want.shape:
            wrong += 1
            continue
        c = cosines(got, want)
        worst = min(worst, float(c.min()))
        wrong += bool(c.min() < args.min_cos)
    warm_at = len(plan) // 10
    after_warm = next((r for d, r in rss if d >= warm_at), rss[-1][1])
    final = rss[-1][1]
    status_counts = dict(collections.Counter(str(s) for s in statuses))
    return {
        "requests": len(plan),
        "malformed": sum(i["kind"] == "malformed" for i in plan),
        "inputs": sum(len(i.get("texts", [])) for i in plan),
        "concurrency": args.soak_concurrency,
        "variant": args.soak_variant,
        "seconds": round(elapsed, 1),
        "throughput_rps": round(len(plan) / elapsed, 1),
        "server_cpu_s": round(cpu, 1),
        "statuses": status_counts,
        "transport_errors": transport_errors,
        "unexpected_status": unexpected_status,
        "wrong_or_misrouted": wrong,
        "min_cos": worst,
        "min_cos_bar": args.min_cos,
        "server_alive_at_end": alive,
        "exit_status_after_sigterm": exit_status,
        "rss_mb_after_warmup": after_warm,
        "rss_mb_end": final,
        "rss_mb_peak": max(r for _, r in rss),
        "rss_growth_pct": round(100 * (final - after_warm) / after_warm, 2),
    }


# -- report -----------------------------------------------------------------------------------------------------


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The load targets (batching gain at concurrency 32, p99 against one request), from the levels."""
    load = result.get("load")
    if not load:
        return {}
    if "batching" not in load or "one_at_a_time" not in load:
        return {}
    on = {lv["concurrency"]: lv for lv in load["batching"]["levels"]}
    off = {lv["concurrency"]: lv for lv in load["one_at_a_time"]["levels"]}
    if 32 not in on or 1 not in on:
        return {}
    return {
        "c32_throughput_gain": round(on[32]["throughput_rps"] / off[32]["throughput_rps"], 2),
        "c32_p99_over_single_p99": round(on[32]["p99_ms"] / on[1]["p99_ms"], 2),
        "targets": "c32_throughput_gain >= 3, c32_p99_over_single_p99 < 4",
    }


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        f"# `dmeta-embed serve` load and soak: {result['tag']}",
        "",
        f"Model `{result['model']}`, load variant `{result['variant']}`; {env['cpus']} CPUs "
        f"({env['cpu']}), shared by the closed-loop client and the server (loopback); "
        f"load average at start {env['loadavg']}. Recorded {result['date']}.",
        "",
    ]
    if "load" in result:
        lines += [
            "## Load (short queries, one per request, base64)",
            "",
            "| mode | concurrency | req/s | p50 ms | p99 ms | errors | server CPU ms/req |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for mode, data in result["load"].items():
            for lv in data["levels"]:
                lines.append(
                    f"| {mode} | {lv['concurrency']} | {lv['throughput_rps']} | {lv['p50_ms']} | "
                    f"{lv['p99_ms']} | {lv['errors']} | {lv['server_cpu_ms_per_request']} |"
                )
        lines.append("")
        for mode, data in result["load"].items():
            w = data.get("info", {}).get("workers")
            if w:
                lines.append(
                    f"- {mode}: {w['count']} worker(s) × {w['threads']} thread(s), "
                    f"variant {data['info']['variant']}, server RSS after the load {data['rss_mb']} MB"
                )
        s = result.get("summary", {})
        if s:
            lines += [
                "",
                f"At concurrency 32: batching gives **{s['c32_throughput_gain']}×** the one-at-a-time "
                f"throughput; p99 is **{s['c32_p99_over_single_p99']}×** the single-request p99 "
                f"(targets: ≥ 3×, < 4×).",
            ]
    if "soak" in result:
        k = result["soak"]
        lines += [
            "",
            "## Soak",
            "",
            f"{k['requests']} requests ({k['malformed']} malformed, {k['inputs']} inputs) at concurrency "
            f"{k['concurrency']}, variant `{k['variant']}`, in {k['seconds']} s ({k['throughput_rps']} req/s).",
            "",
            "| check | result |",
            "|---|---|",
            f"| statuses | {k['statuses']} |",
            f"| transport errors (crash, reset) | {k['transport_errors']} |",
            f"| unexpected status | {k['unexpected_status']} |",
            f"| wrong or misrouted embeddings (cos < {k['min_cos_bar']}) | {k['wrong_or_misrouted']} "
            f"(worst cos {k['min_cos']:.7f}) |",
            f"| server alive at end; exit status after SIGTERM | {k['server_alive_at_end']}; "
            f"{k['exit_status_after_sigterm']} |",
            f"| RSS after warm-up → end (peak) | {k['rss_mb_after_warmup']} → {k['rss_mb_end']} MB "
            f"({k['rss_growth_pct']:+}%; peak {k['rss_mb_peak']} MB) |",
        ]
    return "\n".join(lines) + "\n"


def default_model(workdir: Path) -> Path:
    bundled = Path(__file__).resolve().parents[2] / "out" / "minilm"
    if (bundled / "manifest.json").is_file():
        return bundled
    from dmeta_embed.export import export_model
    from tests.random_models import build_model

    out = workdir / "tiny-export"
    export_model(str(build_model(workdir / "tiny-src", "tiny")), out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="export folder (default: out/minilm, else tiny)")
    p.add_argument("--variant", default="auto", help="variant for the load test (default: what serve picks)")
    p.add_argument(
        "--soak-variant",
        default="fp32",
        help="variant for the soak: fp32, where batch composition cannot change a vector beyond "
        "rounding, so a misrouted answer cannot hide in int8's dynamic-quantisation noise",
    )
    p.add_argument("--concurrency", default="1,8,32,64")
    p.add_argument("--seconds", type=float, default=6.0, help="measured seconds per load level")
    p.add_argument("--max-requests", type=int, default=20000, help="cap per load level")
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    p.add_argument("--soak-requests", type=int, default=10000)
    p.add_argument("--soak-concurrency", type=int, default=64)
    p.add_argument("--soak-timeout", type=float, default=900.0, help="stop sending after this many seconds")
    p.add_argument("--malformed", type=float, default=0.05, help="share of malformed soak requests")
    p.add_argument("--min-cos", type=float, default=0.99999)
    p.add_argument("--skip-load", action="store_true")
    p.add_argument("--skip-soak", action="store_true")
    p.add_argument(
        "--workers",
        default=None,
        help="compare --workers values instead of batching on/off, e.g. 1,auto,2 (batching on)",
    )
    p.add_argument("--tag", default=None, help="results file name: serve_<tag>.{json,md}")
    p.add_argument(
        "--server-arg",
        dest="server_args",
        action="append",
        default=[],
        help="extra argument for dmeta-embed serve (repeat), e.g. --server-arg=--threads=2",
    )
    args = p.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.workers = args.workers.split(",") if args.workers else []
    run = asyncio.run
    try:
        import uvloop

        run = uvloop.run  # the client's own overhead is part of what the cores spend
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        workdir = Path(tmp)
        args.model = args.model or default_model(workdir)
        tag = args.tag or args.model.resolve().name

        result: dict[str, Any] = {
            "tag": tag,
            "model": args.model.resolve().name,
            "variant": args.variant,
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "environment": serve_environment(),
        }
        if not args.skip_load:
            print("load:", flush=True)
            result["load"] = run(load(args, workdir))
            result["summary"] = summary(result)
        if not args.skip_soak:
            print(
                f"soak: {args.soak_requests} requests at concurrency {args.soak_concurrency} ...", flush=True
            )
            result["soak"] = run(soak(args, workdir))
    out = results_dir(result["model"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"serve_{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"serve_{tag}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
