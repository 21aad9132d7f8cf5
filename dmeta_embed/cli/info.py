"""``dmeta-embed inspect``: an exported folder's manifest, and the load plans ``encode`` and
``serve`` would run on this machine. Needs no engine: a plan reads the manifest, this CPU and
what is installed."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import DmetaEmbedError
from ..manifest import Precision, Variant
from ..rerank_records import ScoreFidelity
from ..runtime.cpu import CpuInfo
from ..runtime.installed import Installed


def summary(folder: Path) -> str:
    """A readable summary of an export folder's manifest."""
    from ..manifest import Manifest
    from ..runtime.cpu import detect

    m = Manifest.load(folder)
    src = m.source
    if m.rerank is not None:
        r = m.rerank
        labels = ", ".join(r.labels.values()) or "-"
        head = [
            f"task      rerank (cross-encoder): {r.num_labels} label(s) [{labels}], output {m.output}",
            f"scores    {r.activation.value} (from {r.activation_from})  pairs cut {r.truncation}",
            f"inputs    {', '.join(m.inputs)}",
        ]
    else:
        head = [f"pooling   {m.pooling.value} (from {src.get('pooling_from')})  normalize {m.normalize}"]
    out = [
        f"model     {src.get('model')}" + (f" @ {src['revision']}" if src.get("revision") else ""),
        f"type      {src.get('model_type')}  dim {m.dim}  max_length {m.max_length}",
        *head,
        "fusion    " + ", ".join(f"{k} {v}" for k, v in m.export.get("fusion", {}).items()),
        "passes    " + (", ".join(m.export.get("graph_passes") or []) or "none"),
        f"exported  {m.export.get('created')} in {m.export.get('wall_seconds')} s, opset {m.export.get('opset')}",
        "",
        f"{'variant':8} {'file':19} {'size MB':>8} {'min cos':>10} {'mean cos':>10} {'bar (min/mean)':>16}  ok  "
        "kept float  validated on          speed vs fp32",
    ]
    if m.rerank is not None:
        out[-1] = (
            f"{'variant':8} {'file':19} {'size MB':>8} {'max |Δscore|':>12} {'min rho':>8} {'top-k':>6} "
            f"{'bar (Δ/rho/top-k)':>20}  ok  kept float  validated on          speed vs fp32"
        )
    for name, v in m.variants.items():
        f = v.fidelity
        if isinstance(f, ScoreFidelity):
            bar = f"{f.bar_max_abs_diff:g}/{f.bar_min_spearman:g}/{f.bar_min_topk:g}"
            figures = f"{f.max_abs_diff:12.2e} {f.min_spearman:8.4f} {f.min_topk:6.3f} {bar:>20}"
        else:
            figures = f"{f.min_cos:10.6f} {f.mean_cos:10.6f} {f.bar_min_cos:>7}/{f.bar_mean_cos:<8}"
        out.append(
            f"{name:8} {v.file:19} {v.size_bytes / 1e6:8.1f} {figures}  {'yes' if f.passed else 'NO ':3} "
            f"{len(v.kept_float):10}  {_validated(v):24}  {_speed(v)}"
        )
    for name, v in m.variants.items():
        weights = v.int8.float_weights
        if weights:  # int8-ov: whole MatMuls left float where int8 weights alone missed the bar
            out.append(f"{name:8} {len(weights)} MatMuls keep float weights: {next(iter(weights.values()))}")
    # this machine, not the folder: the plan depends on its CPU class and installed engines
    cpu = detect()
    out += ["", f"this cpu  {cpu.describe()}"]
    try:
        from ..runtime.installed import installed

        found = installed()
    except DmetaEmbedError as e:
        return "\n".join([*out, f"auto      cannot load here: {e}"])
    # what encode (and the corpus job) loads, then what `serve` loads: single short requests,
    # batch-invariant variants only
    for label, profile in (("auto", "library"), ("serve", "server")):
        out += ["", *plan_lines(folder, label, profile, cpu, found)]
    return "\n".join(out)


def plan_lines(folder: Path, label: str, profile: str, cpu: CpuInfo, found: Installed) -> list[str]:
    """The load plan for ``profile`` on this machine: a headline, then one line per field."""
    from ..runtime.plan import make_plan

    try:
        plan = make_plan(folder, profile=profile, cpu=cpu, engines=found)
    except DmetaEmbedError as e:  # no onnxruntime here, or no variant this machine can run
        return [f"{label:9} cannot load here: {e}"]
    head = f"{label:9} {plan.variant.value} on {plan.provider.value} ({profile} profile)"
    return [head, *("  " + line for line in plan.describe().splitlines())]


def _validated(v: Variant) -> str:
    """``int8 on avx2 (u8)``-style: the engine, the CPU class and the int8 weight format (int8-ov:
    the float parts' precision)."""
    cpu = v.validated_cpu
    engine = v.validated_on.replace("ExecutionProvider", "")
    if not cpu.recorded:
        return engine
    weights = f", {cpu.int8_weights}" if v.precision == Precision.INT8 and cpu.int8_weights else ""
    if v.engine_properties.precision_hint is not None:
        weights = f", {v.engine_properties.precision_hint.value}"
    return f"{engine} on {cpu.cpu_class}{weights}"


def _speed(v: Variant) -> str:
    sp = v.speed
    if not sp.measured:
        return "-"
    query = f", one text {sp.query_ms:.1f} ms" if sp.query_ms is not None else ""
    return f"{sp.vs_fp32:.2f}x on {sp.cpu_class}{query}"


@click.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the raw manifest.")
def inspect(folder: Path, as_json: bool) -> None:
    """Summarise an exported folder: variants, sizes, fidelity."""
    if as_json:
        from ..manifest import Manifest

        click.echo(json.dumps(Manifest.load(folder).to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(summary(folder))
