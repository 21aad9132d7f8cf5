"""Peak memory and wall time of one ``dmeta-embed export``, and the stage the peak falls in.

The export runs as a child process (``python -m dmeta_embed.cli export MODEL -o DIR --force``
plus the flags given after ``--``). Every ``--interval`` seconds the proportional set size (PSS)
of the child's whole process tree is summed from ``/proc/<pid>/smaps_rollup``: shared pages
(libraries, a forked child's copy-on-write pages) are counted once across the tree, which summing
RSS would count once per process. The export's log lines name its stages (a line ending in
``...`` when one starts, ``done in`` when it ends); each sample is filed under the stage running,
so the report says where the memory went. Linux only.

On a machine shared with other work, library pages that other processes map too are divided among
them, so PSS reads a little lower there than on a machine running the export alone; the export
process's own high-water mark (VmHWM, resident pages counted whole) is printed beside it as the
upper bound.

    python -m benchmarks.export_memory MODEL -o out/mpnet [--json result.json] [-- --variants fp32,int8]

Prints the peak, the wall time, the load average before and after, the peak per stage, and writes
the samples and the log with ``--json``. Measurements: docs/performance.md, "Export time and
memory".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MB = 1 << 20


def children(pid: int) -> list[int]:
    """``pid`` and every process below it (from each thread's ``children`` list)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return out


def pss_bytes(pid: int) -> int:
    """PSS of one process (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def hwm_bytes(pid: int) -> int:
    """The process's own resident high-water mark (VmHWM), 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


@dataclass
class Log:
    """The child's stderr, each line with its arrival time, and the stage running now."""

    t0: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    stage: str = "start"

    def read(self, stream: object) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            line = raw.rstrip("\n")
            self.lines.append((round(time.perf_counter() - self.t0, 2), line))
            sys.stderr.write(raw)
            msg = line.split(": ", 1)[-1] if line.startswith(("INFO ", "WARNING ")) else line
            if "dmeta_embed" not in line:
                continue
            if msg.endswith(" ..."):
                self.stage = stage_name(msg[:-4])
            elif ": done in " in msg and not self.stage.startswith("after "):
                self.stage = f"after {self.stage}"


def stage_name(message: str) -> str:
    """A stage's short name: its log line up to the first colon (``int8: per-row …`` → ``int8:
    per-row``, the words after the colon up to the first parenthesis or comma)."""
    head, _, rest = message.partition(": ")
    words = rest.split(" (")[0].split(",")[0].split(" on ")[0]
    return f"{head}: {' '.join(words.split()[:4])}" if rest else head


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("--json", type=Path, default=None, help="write the samples and the log here")
    parser.add_argument("extra", nargs="*", help="export flags, after --")
    args = parser.parse_args(argv)

    cmd = [sys.executable, "-m", "dmeta_embed.cli", "export", args.model, "-o", args.output, "--force"]
    cmd += args.extra
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, bufsize=1)
    log = Log(t0)
    reader = threading.Thread(target=log.read, args=(child.stderr,), daemon=True)
    reader.start()
    samples: list[tuple[float, int, str]] = []
    hwm = 0
    most = 1  # processes in the tree at once
    while child.poll() is None:
        tree = children(child.pid)
        most = max(most, len(tree))
        total = sum(pss_bytes(p) for p in tree)
        hwm = max(hwm, hwm_bytes(child.pid))
        if total:
            samples.append((round(time.perf_counter() - t0, 2), total, log.stage))
        time.sleep(args.interval)
    wall = time.perf_counter() - t0
    reader.join(timeout=5)
    load_after = os.getloadavg()

    peak_t, peak, peak_stage = max(samples, key=lambda s: s[1]) if samples else (0.0, 0, "")
    per_stage: dict[str, int] = {}
    for _, b, s in samples:
        per_stage[s] = max(per_stage.get(s, 0), b)
    print(f"exit status {child.returncode}; wall {wall:.1f} s; {len(samples)} samples")
    print(
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f}"
    )
    print(f"peak PSS of the process tree {peak / MB:.0f} MB at {peak_t:.1f} s, in {peak_stage!r}")
    print(f"export process VmHWM {hwm / MB:.0f} MB (as last sampled); at most {most} processes in the tree")
    print("peak PSS per stage (MB):")
    for s, b in per_stage.items():
        print(f"  {b / MB:7.0f}  {s}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "command": cmd,
                    "returncode": child.returncode,
                    "wall_s": round(wall, 1),
                    "load_before": load_before,
                    "load_after": load_after,
                    "peak_pss_mb": round(peak / MB),
                    "peak_at_s": peak_t,
                    "peak_stage": peak_stage,
                    "vm_hwm_mb": round(hwm / MB),
                    "most_processes": most,
                    "per_stage_mb": {s: round(b / MB) for s, b in per_stage.items()},
                    "samples": [(t, round(b / MB), s) for t, b, s in samples],
                    "log": log.lines,
                },
                indent=1,
            )
        )
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
