"""One load-client process of the many-core serving benchmark (``benchmarks.serve_scaling``).

    python -m benchmarks.scaling_client --port P --concurrency 16 [--seed K]

Opens ``concurrency`` keep-alive connections, warms each (two requests), prints ``ready`` and
waits for one line on stdin: ``MEASURE_FROM END`` (``time.time()`` values). Then closed loop:
each connection sends its next short query when the last one returns, until ``END``. Requests
started from ``MEASURE_FROM`` are measured. Prints one JSON line: their latencies, how many
finished by ``END``, errors, and this process's CPU seconds over the window.

Several of these run at once, pinned to the cores the server does not use: one Python event
loop spends tens of microseconds a request, so on a large machine a single client would measure
itself. Short queries: ``serve_load.short_query`` (English and Chinese, 3-16 units).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

from .investigations.serve_client import Connection, json_body
from .investigations.serve_load import HOST, short_query


async def drive(port: int, concurrency: int, seed: int) -> dict:
    rng = random.Random(seed)
    bodies = [
        json_body({"input": short_query(rng), "model": "m", "encoding_format": "base64"}) for _ in range(1000)
    ]
    conns = [Connection(HOST, port) for _ in range(concurrency)]

    async def warm(conn: Connection) -> None:
        for _ in range(2):
            await conn.request("POST", "/v1/embeddings", bodies[0])

    await asyncio.gather(*(warm(c) for c in conns))
    print("ready", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    measure_from, end = (float(x) for x in line.split())
    latencies: list[float] = []
    done = errors = 0
    cpu: list[float] = []

    async def client(i: int, conn: Connection) -> None:
        nonlocal done, errors
        k = i
        while (t0 := time.time()) < end:
            body = bodies[k % len(bodies)]
            k += concurrency
            start = time.perf_counter()
            reply = await conn.request("POST", "/v1/embeddings", body)
            ms = (time.perf_counter() - start) * 1e3
            if t0 >= measure_from:
                if not cpu:
                    cpu.append(time.process_time())
                latencies.append(round(ms, 3))
                done += time.time() <= end
                errors += reply.status != 200

    await asyncio.gather(*(client(i, c) for i, c in enumerate(conns)))
    cpu_s = time.process_time() - cpu[0] if cpu else 0.0
    for c in conns:
        await c.close()
    return {"latencies_ms": latencies, "done": done, "errors": errors, "cpu_s": round(cpu_s, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    run = asyncio.run
    try:
        import uvloop

        run = uvloop.run  # the client's own cost per request is what limits it
    except ImportError:
        pass
    print(json.dumps(run(drive(args.port, args.concurrency, args.seed))), flush=True)


if __name__ == "__main__":
    main()
