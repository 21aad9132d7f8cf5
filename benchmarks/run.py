"""One benchmark run: resolve the model, build workloads, compute the reference, then measure every
system in its own subprocess (sequentially, same run) and turn the raw numbers into rows.

Ratios are only ever made between systems of the same run: absolute times on a shared machine
move from one run to the next; the order of systems and the machine load are recorded.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dmeta_embed.manifest import BARS, Precision

from . import metrics
from .machine import load_snapshot, machine_info
from .systems import INSTALL_HINT, Context, System, adapter_class, our_systems, peer_systems
from .timing import percentiles

SCHEMA_VERSION = 1
#: the fidelity bar every system is judged at, ours and the peers alike: the one our int8 variants
#: must meet at export (manifest.BARS), here measured on the run's own texts (held out from the
#: export's calibration) against transformers + torch fp32. "Best" means fastest at this bar; a
#: faster system below it is shown and marked, never counted.
BAR = BARS[Precision.INT8]
WORKLOADS = ("query", "passage", "long", "mixed")
#: texts per workload: sized so all peers on the Dmeta shape (BERT-base) fit ~15 min on 2 cores
DEFAULT_SIZES = {"query": 128, "passage": 32, "long": 8, "mixed": 64}
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path("out") / "bench-cache"

Log = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    repeats: int = 3
    latency_calls: int = 200
    batch_size: int = 32
    threads: int | None = None
    sizes: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_SIZES))
    seed: int = 0
    timeout_s: float = 1800.0
    #: >1: measure every system that many times, odd passes in reverse order (A B … B A), splitting
    #: the repeats and latency calls between them, so drift in machine load hits all systems alike
    passes: int = 1
    bar_min_cos: float = BAR.min_cos
    bar_mean_cos: float = BAR.mean_cos


@dataclass(frozen=True)
class ModelPaths:
    export_dir: Path  # our exported folder (manifest.json + variants)
    source_dir: Path  # the Hugging Face folder the peers and the reference load
    cache_dir: Path  # prepared peer files


def resolve_model(
    model: str, *, source: str | None = None, cache_dir: Path | None = None, log: Log = print
) -> ModelPaths:
    """``model``: an exported folder, or an HF folder / hub id that is exported first (once:
    the export is kept in the cache folder and reused while its source matches)."""
    from dmeta_embed.errors import ModelLoadError
    from dmeta_embed.manifest import Manifest

    path = Path(model).expanduser()
    if (path / "manifest.json").is_file():
        export_dir = path
        cache = cache_dir or DEFAULT_CACHE / path.resolve().name
    else:
        is_dir = path.is_dir()
        cache = cache_dir or DEFAULT_CACHE / (path.resolve().name if is_dir else model.replace("/", "--"))
        export_dir = cache / "export"
        wanted = str(path.resolve()) if is_dir else model
        try:
            have = Manifest.load(export_dir).source.get("model")
        except ModelLoadError:
            have = None
        if have != wanted:
            from dmeta_embed.export import export_model

            log(f"exporting {model} → {export_dir} (once; reused by later runs)")
            export_model(model, export_dir, force=True)
    manifest = Manifest.load(export_dir)
    src = source or str(manifest.source.get("model") or "")
    if Path(src).is_dir():
        source_dir = Path(src)
    else:
        from dmeta_embed.export.source import resolve

        source_dir = resolve(src, revision=manifest.source.get("revision")).path
    return ModelPaths(export_dir=export_dir, source_dir=source_dir, cache_dir=cache)


def weights_of(source_dir: Path) -> str:
    """``random`` for a folder built by ``tests.random_models`` (the shape run), else ``real``."""
    from tests.random_models import MARKER

    return "random" if (source_dir / MARKER).is_file() else "real"


def select_systems(
    variants: Sequence[str], peers: bool, patterns: Sequence[str] | None = None, extra: Sequence[System] = ()
) -> list[System]:
    """Our variants, then the peers (when asked), then ``extra``; ``patterns`` (fnmatch on the
    key, e.g. ``st:*``) filter the whole list when given."""
    systems = our_systems(list(variants)) + (peer_systems() if peers or patterns else []) + list(extra)
    if patterns:
        systems = [s for s in systems if any(fnmatch.fnmatch(s.key, p) for p in patterns)]
    return systems


#: tokens per text (special tokens included) each workload promises; long = the truncation path
TOKEN_RANGES = {"query": (8, 32), "passage": (100, 500), "long": (None, None)}
MIX = {"query": 0.70, "passage": 0.25, "long": 0.05}


def build_workloads(
    names: Sequence[str],
    sizes: dict[str, int],
    seed: int,
    count: Callable[[list[str]], list[int]],
    max_length: int,
) -> dict[str, list[str]]:
    """Seeded texts whose token counts (with this model's tokenizer) are inside each workload's
    range: drawn in order from a larger seeded pool of ``benchmarks.workloads.workload`` texts, so
    the same seed and tokenizer give the same texts. ``mixed`` = 70 % query, 25 % passage, 5 %
    long, shuffled with the seed."""
    import random

    from .workloads import workload

    def pick(name: str, n: int) -> list[str]:
        lo, hi = TOKEN_RANGES[name]
        lo = max_length if name == "long" else lo
        hi = max_length if hi is None else min(hi, max_length)
        pool = workload(name, 4 * n + 16, seed)
        lengths = count(pool)
        ok = [t for t, k in zip(pool, lengths, strict=True) if lo <= k <= hi]
        if len(ok) < n:
            raise ValueError(
                f"only {len(ok)} of {len(pool)} '{name}' texts have {lo}–{hi} tokens with this "
                f"tokenizer; need {n}"
            )
        return ok[:n]

    out: dict[str, list[str]] = {}
    for name in names:
        n = sizes.get(name) or DEFAULT_SIZES[name]
        if name != "mixed":
            out[name] = pick(name, n)
            continue
        counts = {"query": int(n * MIX["query"]), "long": max(1, int(n * MIX["long"]))}
        counts["passage"] = n - counts["query"] - counts["long"]
        texts = [t for k, c in counts.items() for t in pick(k, c)]
        random.Random(f"mixed:{seed}").shuffle(texts)
        out[name] = texts
    return out


def workload_stats(
    texts: list[str], lengths: list[int], max_length: int, config: dict[str, Any]
) -> dict[str, Any]:
    a = np.asarray(lengths)
    return {
        "n_texts": len(texts),
        "tokens_total": int(a.sum()),
        "tokens_mean": round(float(a.mean()), 1),
        "tokens_min": int(a.min()),
        "tokens_p50": int(np.median(a)),
        "tokens_max": int(a.max()),
        "n_truncated": int((a >= max_length).sum()),
        "chars_total": sum(len(t) for t in texts),
        "gflop": round(metrics.workload_flops(lengths, config) / 1e9, 2),
    }


class Runner:
    """Spawns workers with this interpreter and the repository on ``PYTHONPATH``."""

    def __init__(self, workdir: Path, timeout_s: float, log: Log) -> None:
        self.workdir, self.timeout_s, self.log = workdir, timeout_s, log

    def __call__(self, job: dict[str, Any], stem: str) -> dict[str, Any]:
        job_file = self.workdir / f"{stem}.job.json"
        result_file = self.workdir / f"{stem}.result.json"
        env = os.environ.copy()
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        job_file.write_text(json.dumps(job, ensure_ascii=False), "utf-8")
        try:
            # the spawn time travels on the command line: cold start counts from here
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.worker",
                    str(job_file),
                    str(result_file),
                    repr(time.time()),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
            )
        except subprocess.TimeoutExpired:
            return {"status": "failed", "error": f"timed out after {self.timeout_s:.0f} s"}
        if not result_file.is_file():
            tail = (proc.stderr or "")[-2000:]
            return {
                "status": "failed",
                "error": f"worker exited with status {proc.returncode} and no result",
                "stderr_tail": tail,
            }
        return json.loads(result_file.read_text("utf-8"))  # type: ignore[no-any-return]


def _git_state() -> dict[str, Any]:
    """The checkout the harness ran from (commit, and whether it had local changes), if any."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if head.returncode != 0:
        return {}
    return {"git_commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def _share(gops: float, precision: str, peaks: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "fp32" in peaks:
        out["of_fp32_peak"] = round(gops / peaks["fp32"]["gops"], 4)
    best = metrics.peak_for(precision, peaks)
    if best:
        out["own_peak"] = best[0]
        out["of_own_peak"] = round(gops / best[1], 4)
    return out


def run_benchmark(
    model: str,
    output: Path | None,
    *,
    variants: Sequence[str] | None = None,
    workloads: Sequence[str] = ("mixed", "query"),
    peers: bool = False,
    patterns: Sequence[str] | None = None,
    extra_systems: Sequence[System] = (),
    settings: Settings = Settings(),
    source: str | None = None,
    cache_dir: Path | None = None,
    command: str | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Measure and return the result dict; with ``output``, also write bench.json/.md/.png there."""
    from dmeta_embed.manifest import Manifest
    from dmeta_embed.runtime.cpu import available_cpus
    from dmeta_embed.runtime.tokenize import TextTokenizer

    started = load_snapshot()
    t_run = time.perf_counter()
    paths = resolve_model(model, source=source, cache_dir=cache_dir, log=log)
    manifest = Manifest.load(paths.export_dir)
    config = json.loads((paths.source_dir / "config.json").read_text("utf-8"))
    threads = settings.threads or available_cpus()
    ctx = Context(
        export_dir=paths.export_dir.resolve(),
        source_dir=paths.source_dir.resolve(),
        cache_dir=paths.cache_dir.resolve(),
        threads=threads,
        batch_size=settings.batch_size,
        max_length=manifest.max_length,
        pooling=manifest.pooling.value,
        normalize=manifest.normalize,
        dim=manifest.dim,
    )
    ctx.cache_dir.mkdir(parents=True, exist_ok=True)
    variants = list(variants) if variants else list(manifest.variants)
    unknown = [v for v in variants if v not in manifest.variants]
    if unknown:
        raise ValueError(f"{paths.export_dir} has no variant(s) {unknown} (it has {list(manifest.variants)})")
    systems = select_systems(variants, peers, patterns, extra_systems)

    tokenizer = TextTokenizer(paths.export_dir / manifest.tokenizer.file, manifest.max_length)
    texts = build_workloads(
        workloads, settings.sizes, settings.seed, tokenizer.count_tokens, manifest.max_length
    )
    stats = {
        w: workload_stats(t, tokenizer.count_tokens(t), manifest.max_length, config) for w, t in texts.items()
    }

    machine = machine_info()
    peaks = metrics.peak_gops(machine["flags"], machine["clock_ghz"], threads)
    workdir = Path(tempfile.mkdtemp(prefix="dmeta-bench-"))
    emb_dir = workdir / "emb"
    emb_dir.mkdir()
    spawn = Runner(workdir, settings.timeout_s, log)
    passes = max(1, settings.passes)
    per_pass_calls = math.ceil(settings.latency_calls / passes)
    base_job = {
        "context": ctx.to_dict(),
        "emb_dir": str(emb_dir),
        "workloads": texts,
        "repeats": math.ceil(settings.repeats / passes),
        "latency_calls": per_pass_calls,
        "first_text": texts[workloads[0]][0],
    }
    try:
        log("reference: transformers + torch fp32 embeddings of every workload")
        ref = spawn({**base_job, "mode": "reference"}, "reference")
        if ref["status"] != "ok":
            raise RuntimeError(
                f"the fp32 PyTorch reference failed: {ref.get('error')}\n{ref.get('traceback', '')}"
            )
        reference = {w: np.load(emb_dir / f"reference.{w}.npy") for w in workloads}

        runs: dict[str, list[dict[str, Any]]] = {s.key: [] for s in systems}
        for p in range(passes):
            for system in systems if p % 2 == 0 else systems[::-1]:
                if runs[system.key] and runs[system.key][-1]["status"] != "ok":
                    continue  # skipped or failed once: no second try
                job = {**base_job, "latency_offset": p * per_pass_calls}
                runs[system.key].append(
                    _run_system(
                        system, ctx, job, spawn, log, f" (pass {p + 1}/{passes})" if passes > 1 else ""
                    )
                )
        sys_rows: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for system in systems:
            row = _merge_passes(runs[system.key])
            sys_rows.append(row)
            if row["status"] != "ok":
                continue
            raw = row.pop("_workloads")
            for w in workloads:
                emb = np.load(emb_dir / f"{system.stem}.{w}.npy")
                results.append(_result_row(system, w, raw[w], row, stats[w], emb, reference[w], peaks))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    result = {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "wall_seconds": round(time.perf_counter() - t_run, 1),
        "machine": machine,
        "load": {"before": started, "after": load_snapshot()},
        "model": {
            "export_dir": str(paths.export_dir),
            "source_dir": str(paths.source_dir),
            "source": manifest.source,
            "weights": weights_of(paths.source_dir),
            "dim": manifest.dim,
            "max_length": manifest.max_length,
            "pooling": manifest.pooling.value,
            "normalize": manifest.normalize,
            "layers": config.get("num_hidden_layers"),
            "hidden": config.get("hidden_size"),
            "intermediate": config.get("intermediate_size"),
            "export_created": manifest.export.get("created"),
            # what a user of this folder gets on this machine: Embedder.load(...) and `serve`
            "auto": auto_choices(manifest),
            "fusion": manifest.export.get("fusion"),
            "variants": {
                k: {
                    "file": v.file,
                    "size_mb": round(v.size_bytes / 1e6, 1),
                    "sha256": v.sha256,
                    "kept_float": len(v.kept_float),
                }
                for k, v in manifest.variants.items()
            },
        },
        "code": _git_state(),
        "settings": {
            **asdict(settings),
            "threads": threads,
            "warmup_passes": 1,
            "reference": "transformers + torch fp32 (dmeta_embed.export.reference)",
            "order": [s.key for s in systems],
        },
        "workloads": stats,
        "physical": {
            "flops_per_token": {
                w: round(s["gflop"] * 1e9 / s["tokens_total"] / 1e6, 1) for w, s in stats.items()
            },
            "flops_per_token_unit": "MFLOP per real token (padding not counted)",
            "peaks": peaks,
            "clock_ghz": machine["clock_ghz"],
            "clock_from": machine["clock_from"],
            "cores": threads,
            "note": "ops/cycle/core × clock × cores, and turbo or AVX-512/AMX licence clocks move them by "
            "tens of percent",
        },
        "systems": sys_rows,
        "results": results,
        "summary": summarize(results, workloads, settings.bar_min_cos, settings.bar_mean_cos),
    }
    if output is not None:
        from .report import write_report

        write_report(result, output)
    return result


def _merge_passes(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """One system row from its passes: timings pooled, peak RSS the max, load time the median."""
    last = passes[-1]
    if last["status"] != "ok":
        return last
    row = {
        k: v
        for k, v in last.items()
        if k not in {"_workloads", "load_s", "peak_rss_mb", "rss_after_load_mb", "loadavg_1m_at_start"}
    }
    row.update(
        load_s=float(np.median([r["load_s"] for r in passes])),
        load_s_passes=[r["load_s"] for r in passes],
        peak_rss_mb=max(r["peak_rss_mb"] for r in passes),
        rss_after_load_mb=max(r["rss_after_load_mb"] or 0 for r in passes),
        loadavg_1m_at_start=[r["loadavg_1m_at_start"] for r in passes],
        passes=len(passes),
    )
    merged: dict[str, Any] = {}
    for w in last["_workloads"]:
        parts = [r["_workloads"][w] for r in passes]
        lat = [x for part in parts for x in part["latency_raw_ms"]]
        runs = [x for part in parts for x in part["bulk_s"]]
        merged[w] = {
            "bulk_s": runs,
            "bulk_median_s": float(np.median(runs)),
            "bulk_warmup_s": [x for part in parts for x in part["bulk_warmup_s"]],
            "bulk_cpu_per_wall": [x for part in parts for x in part["bulk_cpu_per_wall"]],
            "latency_ms": percentiles(lat) if lat else None,
        }
    row["_workloads"] = merged
    return row


def _run_system(
    system: System, ctx: Context, base_job: dict[str, Any], spawn: Runner, log: Log, label: str = ""
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "key": system.key,
        "name": system.name,
        "variant": system.variant,
        "engine": system.engine,
        "precision": system.precision,
        "ours": system.ours,
        "note": system.note,
    }
    missing = system.missing()
    if missing:
        log(f"{system.key}: skipped (not installed: {', '.join(missing)})")
        return {**row, "status": "skipped", "reason": f"not installed: {', '.join(missing)} ({INSTALL_HINT})"}
    unsupported = system.unsupported()
    if unsupported:
        log(f"{system.key}: skipped ({unsupported})")
        return {**row, "status": "skipped", "reason": unsupported}
    stem = system.stem
    job = {**base_job, "system": system.to_dict()}
    try:
        prepared = adapter_class(system).is_prepared(ctx, **system.options)
    except Exception as e:  # an adapter that cannot even be built: report, do not crash
        return {**row, "status": "failed", "error": f"{type(e).__name__}: {e}"}
    record = ctx.cache_dir / "prepared.json"
    done = json.loads(record.read_text("utf-8")) if record.is_file() else {}
    if not prepared:
        log(f"{system.key}: preparing (one-time export into {ctx.cache_dir})")
        prep = spawn({**job, "mode": "prepare"}, f"{stem}.prepare")
        if prep["status"] != "ok":
            log(f"{system.key}: {prep['status']} while preparing: {prep.get('reason') or prep.get('error')}")
            return {**row, **prep}
        done[system.key] = {
            "prepare_s": prep["prepare_s"],
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        record.write_text(json.dumps(done, indent=1), "utf-8")
        row.update(prepare_s=prep["prepare_s"], prepare_cached=False)
    elif system.key in done:
        # exported by an earlier run into the same cache: report what it cost then
        row.update(prepare_s=done[system.key]["prepare_s"], prepare_cached=True)
    log(f"{system.key}: measuring{label}")
    # 1-minute load average as this system starts (a decaying average: it still counts the
    # previous worker for a while); with CPU/wall it shows whether other work shared the machine
    loadavg = round(os.getloadavg()[0], 2)
    res = spawn({**job, "mode": "measure"}, stem)
    if res["status"] != "ok":
        log(f"{system.key}: {res['status']}: {res.get('reason') or res.get('error')}")
        return {**row, **res}
    row.update(
        status="ok",
        load_s=res["load_s"],
        load_in_process_s=res["load_in_process_s"],
        peak_rss_mb=res["peak_rss_mb"],
        rss_after_load_mb=res["rss_after_load_mb"],
        info=res["info"],
        loadavg_1m_at_start=loadavg,
        _workloads=res["workloads"],
    )
    return row


def _result_row(
    system: System,
    w: str,
    raw: dict[str, Any],
    sys_row: dict[str, Any],
    stats: dict[str, Any],
    emb: np.ndarray,
    ref: np.ndarray,
    peaks: dict[str, Any],
) -> dict[str, Any]:
    med = raw["bulk_median_s"]
    gops = stats["gflop"] / med
    lat = raw["latency_ms"]
    return {
        "system": system.key,
        "name": system.name,
        "variant": system.variant,
        "engine": system.engine,
        "precision": system.precision,
        "ours": system.ours,
        "workload": w,
        "sentences_per_s": round(stats["n_texts"] / med, 2),
        "tokens_per_s": round(stats["tokens_total"] / med, 1),
        "bulk_median_s": round(med, 4),
        "bulk_s": raw["bulk_s"],
        "bulk_warmup_s": raw["bulk_warmup_s"],
        "bulk_cpu_per_wall": raw["bulk_cpu_per_wall"],
        "cpu_per_wall_median": round(float(np.median(raw["bulk_cpu_per_wall"])), 2),
        "latency_ms": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in lat.items()}
        if lat
        else None,
        "load_s": sys_row["load_s"],
        "peak_rss_mb": sys_row["peak_rss_mb"],
        "loadavg_1m_at_start": sys_row["loadavg_1m_at_start"],
        "fidelity": {
            k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.fidelity(emb, ref).items()
        },
        "gflop_per_s": round(gops, 1),
        "share": _share(gops, system.precision, peaks),
    }


def meets_bar(row: dict[str, Any], min_cos: float = BAR.min_cos, mean_cos: float = BAR.mean_cos) -> bool:
    """Whether a result row's fidelity against the torch reference reaches the bar."""
    f = row["fidelity"]
    return bool(f["min_cos"] >= min_cos and f["mean_cos"] >= mean_cos)


def summarize(
    results: list[dict[str, Any]],
    workloads: Sequence[str],
    min_cos: float = BAR.min_cos,
    mean_cos: float = BAR.mean_cos,
) -> dict[str, Any]:
    """Per workload: our best and the best peer by tokens/s and by p50 latency, among the systems
    that meet the fidelity bar, and their ratios. Every row gets ``meets_bar``; the peers faster
    than the best peer but below the bar are listed (``faster_below_bar``), not counted."""
    out: dict[str, Any] = {}
    for w in workloads:
        rows = [r for r in results if r["workload"] == w]
        for r in rows:
            r["meets_bar"] = meets_bar(r, min_cos, mean_cos)
        ours = [r for r in rows if r["ours"] and r["meets_bar"]]
        peers = [r for r in rows if not r["ours"] and r["meets_bar"]]
        bo = max(ours, key=lambda r: r["tokens_per_s"]) if ours else None
        bp = max(peers, key=lambda r: r["tokens_per_s"]) if peers else None
        s: dict[str, Any] = {"bar": {"min_cos": min_cos, "mean_cos": mean_cos}}
        if bo:
            s["best_ours"] = bo["system"]
        if bp:
            s["best_peer"] = bp["system"]
        s["faster_below_bar"] = [
            r["system"]
            for r in sorted(rows, key=lambda r: -r["tokens_per_s"])
            if not r["ours"] and not r["meets_bar"] and (bp is None or r["tokens_per_s"] > bp["tokens_per_s"])
        ]
        if bo and bp:
            s["throughput_ratio"] = round(bo["tokens_per_s"] / bp["tokens_per_s"], 3)
            lo = [r for r in ours if r["latency_ms"]]
            lp = [r for r in peers if r["latency_ms"]]
            if lo and lp:
                fo = min(lo, key=lambda r: r["latency_ms"]["p50"])
                fp = min(lp, key=lambda r: r["latency_ms"]["p50"])
                s.update(
                    fastest_ours=fo["system"],
                    fastest_peer=fp["system"],
                    p50_ratio=round(fp["latency_ms"]["p50"] / fo["latency_ms"]["p50"], 3),
                )
        if bp:
            for r in rows:
                r["vs_best_peer"] = round(r["tokens_per_s"] / bp["tokens_per_s"], 3)
        out[w] = s
    return out


def auto_choices(manifest: Any) -> dict[str, dict[str, str]]:
    """``auto``'s choice on this machine for bulk work (``Embedder.load``'s library profile) and
    for ``serve`` (the server profile), with its reason, or the error that refuses it."""
    from dmeta_embed.errors import DmetaEmbedError
    from dmeta_embed.runtime.cpu import detect
    from dmeta_embed.runtime.installed import installed
    from dmeta_embed.runtime.plan import Profile, decide

    out: dict[str, dict[str, str]] = {}
    for use, profile in (("bulk", Profile.LIBRARY), ("serve", Profile.SERVER)):
        try:
            c = decide(manifest, profile=profile, cpu=detect(), engines=installed())
            out[use] = {"variant": c.variant.value, "provider": c.provider.value, "reason": c.reason}
        except DmetaEmbedError as e:
            out[use] = {"variant": "", "provider": "", "reason": str(e)}
    return out
