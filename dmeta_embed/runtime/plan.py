"""The load plan: what will run here, decided in one place.

A :class:`LoadPlan` is a frozen, printable value made by :func:`make_plan` from three things: the
exported folder (its manifest), the request (``variant``, ``provider``) and the caller's
:class:`Profile` (a library call, a server, a bulk worker), with the machine's facts (CPU class,
installed engines, usable cores) injected or detected. It names the variant, engine and provider,
how int8 weights are fed, the engine's properties, the threads, how OpenVINO uses its streams,
the batching, the compiled-model cache and whether the file's checksum is verified, with the
reason and any warning. :func:`start` starts its engine (``runtime.engines``), and is the one
place where a listed CUDA that does not start falls back to the CPU. ``Embedder``, ``serve``, the
corpus driver and its Ray workers, and the export's validation and timing all start engines
this way. No engine is imported until a plan is started (each factory imports its own).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, ProviderError
from ..manifest import Manifest, Precision, Provider
from .batching import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS
from .choice import Choice, choose
from .cpu import CpuInfo, available_cpus, detect, owns_cpus
from .cpu import affinity as own_affinity
from .engines import Streams, start_runner
from .installed import Installed, installed
from .runner import Runner

log = logging.getLogger(__name__)


class Profile(str, Enum):
    """Who will call the engine, which changes what ``auto`` loads and how the engine runs."""

    #: ``Embedder.encode``: one text or a large list per call; on OpenVINO a large call runs its
    #: batches side by side in streams, one text stays in latency mode
    LIBRARY = "library"
    #: ``serve``: one short request at a time, batched with concurrent ones: ``auto`` ranks by
    #: one-text latency and loads only a batch-invariant variant; OpenVINO in latency mode
    SERVER = "server"
    #: a corpus worker: large calls only; OpenVINO in streams only
    BULK = "bulk"


class Default(Enum):
    """Marks an argument left to the plan's own default (where None means "off")."""

    CACHE = "the user cache"
    #: this process's affinity mask, read when the plan is made
    AFFINITY = "this process's affinity"


#: how each profile runs OpenVINO
PROFILE_STREAMS = {
    Profile.LIBRARY: Streams.ADAPTIVE,
    Profile.SERVER: Streams.LATENCY,
    Profile.BULK: Streams.THROUGHPUT,
}


@dataclass(frozen=True)
class Request:
    """What the caller asked for, kept in the plan: a fallback plans again from it."""

    variant: str = "auto"
    provider: str = "auto"
    threads: int | None = None
    max_batch_tokens: int | None = None
    batch_size: int | None = None
    streams: Streams | None = None
    guard: bool = True


@dataclass(frozen=True)
class LoadPlan:
    """Everything about what will run here. Made by :func:`make_plan`; started by :func:`start`."""

    folder: Path
    manifest: Manifest = field(repr=False)
    profile: Profile
    request: Request
    #: the decision: variant, provider, int8 weight format, engine properties, reason, warning
    choice: Choice
    cpu: CpuInfo = field(repr=False)
    installed: Installed = field(repr=False)
    threads: int
    #: onnxruntime: whether idle threads busy-wait between operators
    spin: bool
    streams: Streams
    max_batch_tokens: int
    batch_size: int
    #: OpenVINO's compiled-model cache folder (None: compile at every start)
    cache_dir: Path | None
    #: check the model file's sha256 against the manifest before starting it
    verify: bool
    #: why this plan replaced an earlier one ("" when it did not): CUDA listed but not started
    fallback: str = ""
    #: texts made of one token over and over go to the folder's fp32 graph instead
    #: (``runtime.guard``): on for every variant but fp32, where onnxruntime can run fp32
    guard: bool = False
    #: how many CPUs this process may run on (its affinity mask; None: the platform does not say)
    affinity: int | None = field(default=None, repr=False)

    @property
    def cpu_pinning(self) -> bool:
        """OpenVINO: False turns the CPU plugin's thread pinning off, True leaves it to OpenVINO
        (which pins on Linux). Off where the threads do not cover every CPU of the affinity
        (``runtime.cpu.owns_cpus``): processes sharing CPUs (Ray replicas, containers without a
        cpuset) would each pin to the same first CPUs (docs/performance.md, "Serving on Ray")."""
        return owns_cpus(self.threads, self.affinity)

    @property
    def variant(self) -> Precision:
        return self.choice.variant

    @property
    def provider(self) -> Provider:
        return self.choice.provider

    @property
    def engine(self) -> str:
        return self.provider.engine

    @property
    def model_file(self) -> Path:
        return self.folder / self.manifest.variants[self.variant.value].file

    @property
    def tokenizer_file(self) -> Path:
        return self.folder / self.manifest.tokenizer.file

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(w for w in (self.fallback, self.choice.warning) if w)

    def describe(self) -> str:
        """The plan as ``dmeta-embed inspect`` prints it: one ``key: value`` line per field."""
        d = self.to_dict()
        lines = [f"{k:<18} {_show(d[k])}" for k in _SHOWN if d.get(k) not in (None, "", {}, [])]
        lines.append(f"{'reason':<18} {self.choice.reason}")
        lines += [f"{'warning':<18} {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain data: printed by ``inspect --json``, logged, shipped to corpus workers."""
        c = self.choice
        return {
            "folder": str(self.folder),
            "profile": self.profile.value,
            "variant": c.variant.value,
            "provider": c.provider.value,
            "engine": self.engine,
            "file": self.model_file.name,
            "int8_weights": c.int8_weights,
            "engine_properties": dict(c.engine_properties),
            "threads": self.threads,
            "spin": self.spin,
            "streams": self.streams.value if self.provider == Provider.OPENVINO else None,
            "cpu_pinning": self.cpu_pinning if self.provider == Provider.OPENVINO else None,
            "affinity": self.affinity,
            "max_batch_tokens": self.max_batch_tokens,
            "batch_size": self.batch_size,
            "cache_dir": str(self.cache_dir) if self.cache_dir and self.engine == "openvino" else None,
            "verify": self.verify,
            "guard": self.guard,
            "cpu_class": self.cpu.cpu_class.value,
            "asked": {"variant": self.request.variant, "provider": self.request.provider},
            "basis": c.basis.value,
            "reason": c.reason,
            "warnings": list(self.warnings),
            #: the structured decision (``Choice.to_dict``): what was set aside and why, with figures
            "decision": c.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, threads: int | None = None) -> LoadPlan:
        """The plan ``d`` (:meth:`to_dict`, perhaps made on another machine) describes, made again
        here by name: its variant and provider, profile, batching and streams, with this
        machine's CPU deciding how int8 weights are fed and whether bf16 is native, its cores
        the threads (``threads``: default every usable CPU) and this process's affinity whether
        OpenVINO pins them. Refused with a ProviderError where
        this machine cannot run that variant there; never replaced by another."""
        return make_plan(
            d["folder"],
            d["variant"],
            d["provider"],
            d["profile"],
            threads=threads,
            max_batch_tokens=d["max_batch_tokens"],
            batch_size=d["batch_size"],
            spin=d["spin"],
            streams=d["streams"],
            verify=d["verify"],
            guard=d.get("guard", True),
        )


_SHOWN = (
    "folder",
    "profile",
    "variant",
    "provider",
    "engine",
    "file",
    "int8_weights",
    "engine_properties",
    "threads",
    "spin",
    "streams",
    "cpu_pinning",
    "affinity",
    "max_batch_tokens",
    "batch_size",
    "cache_dir",
    "verify",
    "guard",
    "cpu_class",
    "basis",
)


def _show(value: object) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def read_folder(folder: str | Path) -> tuple[Path, Manifest]:
    """An exported folder and its manifest, refused with a ModelLoadError where the runtime could
    not run it (no folder, no manifest, a padding side it does not feed)."""
    path = Path(folder)
    if not path.is_dir():
        raise ModelLoadError(f"model folder not found: {folder}")
    manifest = Manifest.load(path)
    if manifest.tokenizer.padding_side != "right":
        raise ModelLoadError(
            f"{path}: the manifest says padding_side={manifest.tokenizer.padding_side!r}; "
            "this runtime pads right"
        )
    return path, manifest


def decide(
    manifest: Manifest,
    variant: str = "auto",
    provider: str = "auto",
    profile: Profile | str = Profile.LIBRARY,
    *,
    cpu: CpuInfo,
    engines: Installed,
) -> Choice:
    """The variant and provider a plan for ``profile`` runs (``runtime.choice.choose``): a server
    ranks by one-text latency and needs a batch-invariant variant (it batches concurrent
    requests together); a library call and a bulk worker rank by throughput."""
    server = Profile(profile) == Profile.SERVER
    return choose(
        manifest,
        variant,
        provider,
        cpu=cpu,
        installed=engines,
        prefer_latency=server,
        batched_requests=server,
    )


def make_plan(
    folder: str | Path,
    variant: str = "auto",
    provider: str = "auto",
    profile: Profile | str = Profile.LIBRARY,
    *,
    threads: int | None = None,
    max_batch_tokens: int | None = None,
    batch_size: int | None = None,
    spin: bool = True,
    streams: Streams | str | None = None,
    verify: bool = True,
    guard: bool = True,
    cache_dir: Path | None | Default = Default.CACHE,
    cpu: CpuInfo | None = None,
    engines: Installed | None = None,
    affinity: int | None | Default = Default.AFFINITY,
) -> LoadPlan:
    """The plan for ``folder`` on this machine. ``variant``/``provider``: ``auto`` or a name
    (explicit requests are honoured or refused, never replaced: ``runtime.choice.choose``).
    ``profile``: who calls (:class:`Profile`). ``threads``: default every CPU this process may
    use (affinity and cgroup quota). ``streams``: override the profile's OpenVINO mode.
    ``cache_dir``: OpenVINO's compiled-model cache (default ``$DMETA_EMBED_OPENVINO_CACHE``, else
    the user cache; None turns it off). ``guard``: route texts made of one token over and over
    to the fp32 graph (``runtime.guard``; only where the variant is not fp32 and onnxruntime can
    run fp32). ``cpu``/``engines``/``affinity`` (how many CPUs this process may run on; None:
    unknown): the machine's facts (detected by default), injectable so every machine can be
    planned for on any other."""
    path, manifest = read_folder(folder)
    profile = Profile(profile)
    cpu = cpu or detect()
    engines = engines or installed()
    if isinstance(affinity, Default):
        mask = own_affinity()
        affinity = len(mask) if mask is not None else None
    threads = threads or available_cpus()
    choice = decide(manifest, variant, provider, profile, cpu=cpu, engines=engines)
    for f in (path / manifest.variants[choice.variant.value].file, path / manifest.tokenizer.file):
        if not f.is_file():
            raise ModelLoadError(f"{path}: {f.name} is missing")
    if isinstance(cache_dir, Default):
        from .openvino import default_cache_dir  # numpy only: openvino is imported by the runner

        cache_dir = default_cache_dir()
    request = Request(
        variant, provider, threads, max_batch_tokens, batch_size, Streams(streams) if streams else None, guard
    )
    return LoadPlan(
        folder=path,
        manifest=manifest,
        profile=profile,
        request=request,
        choice=choice,
        cpu=cpu,
        installed=engines,
        threads=threads,
        spin=spin,
        streams=request.streams or PROFILE_STREAMS[profile],
        max_batch_tokens=max_batch_tokens or DEFAULT_BATCH_TOKENS[choice.provider],
        batch_size=batch_size or DEFAULT_BATCH_SIZE,
        cache_dir=cache_dir,
        verify=verify,
        guard=guard
        and choice.variant != Precision.FP32
        and Precision.FP32.value in manifest.variants
        and engines.onnxruntime,
        affinity=affinity,
    )


def fp32_plan(plan: LoadPlan) -> LoadPlan:
    """What a guarded plan's routed texts run on: the folder's fp32 graph on onnxruntime's CPU
    provider, with the plan's threads, batching and profile."""
    return make_plan(
        plan.folder,
        Precision.FP32.value,
        Provider.CPU.value,
        plan.profile,
        threads=plan.threads,
        max_batch_tokens=plan.request.max_batch_tokens,
        batch_size=plan.batch_size,
        spin=plan.spin,
        verify=plan.verify,
        guard=False,
        cache_dir=None,
        cpu=plan.cpu,
        engines=plan.installed,
        affinity=plan.affinity,
    )


def without_cuda(plan: LoadPlan, why: str) -> LoadPlan:
    """``plan`` made again as if CUDA were not installed, saying why (CUDA did not start)."""
    asked = plan.request
    again = make_plan(
        plan.folder,
        asked.variant,
        asked.provider,
        plan.profile,
        threads=asked.threads,
        max_batch_tokens=asked.max_batch_tokens,
        batch_size=asked.batch_size,
        spin=plan.spin,
        streams=asked.streams,
        verify=plan.verify,
        guard=plan.request.guard,
        cache_dir=plan.cache_dir,
        cpu=plan.cpu,
        engines=replace(plan.installed, cuda=False),
        affinity=plan.affinity,
    )
    return replace(again, fallback=why)


def start(plan: LoadPlan) -> tuple[LoadPlan, Runner]:
    """Start ``plan``'s engine; returns the plan that runs, with its runner. onnxruntime-gpu lists
    CUDA wherever it is installed, also where CUDA cannot start (no driver, missing libraries):
    when ``auto`` chose CUDA and it does not start, the CPU plan runs instead, with the reason in
    its ``fallback`` and the log; an explicitly asked-for CUDA still fails."""
    try:
        return plan, start_runner(plan)
    except ProviderError as e:
        if plan.provider != Provider.CUDA or plan.request.provider != "auto":
            raise
        cpu_plan = without_cuda(plan, f"CUDA is listed but did not start ({e}); running on the CPU")
        log.warning("%s: %s", plan.folder, cpu_plan.fallback)
        return cpu_plan, start_runner(cpu_plan)


def resolve(plan: LoadPlan) -> LoadPlan:
    """The plan that will really run: where ``auto`` chose CUDA, its engine is started once to
    see that CUDA starts (and released); any other plan is returned as it is. For a caller that
    hands the plan on rather than running it (the corpus driver, whose workers must not be told
    CUDA where it cannot start)."""
    if plan.provider != Provider.CUDA or plan.request.provider != "auto":
        return plan
    resolved, runner = start(plan)
    del runner
    return resolved
