"""What a variant builder is: the :class:`Builder` protocol, its result, and the defaults most
builders share (:class:`BaseBuilder`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ...manifest import Fidelity, Precision, Provider, Variant
from ...rerank_records import ScoreFidelity
from ...variant_records import EngineProperties, Int8Recipe, Speed

if TYPE_CHECKING:
    from ..context import Context
    from ..speed import SpeedRun, Start


@dataclass
class Candidate:
    """A built and validated variant: its file and what the manifest records about it. The graph
    itself is not kept: it is written as soon as it is built and the engines load it from there
    (the pipeline removes the file if the variant is left out)."""

    #: the variant's file in the export folder (:meth:`Context.save`)
    path: Path
    #: the graph's operators (the manifest's ``ops``), counted before it was dropped
    ops: dict[str, int]
    #: measured on the probe texts against the PyTorch reference, at the variant's bar
    fidelity: Fidelity | ScoreFidelity
    #: what was left in float, each with the measured reason
    kept_float: dict[str, str] = field(default_factory=dict)
    #: the engine the fidelity was measured on
    validated_on: str = Provider.CPU.ort_name
    #: measured on a GPU (the manifest then records no CPU)
    on_gpu: bool = False
    engine_properties: EngineProperties = field(default_factory=EngineProperties)
    int8_tensors: int = 0
    #: int8 and int8-ov: how it quantizes (``Variant.int8``)
    int8: Int8Recipe = field(default_factory=Int8Recipe)
    #: int8: how the weights were fed when validated (``"s8"`` as exported, ``"u8"`` shifted),
    #: recorded as the validated CPU's ``int8_weights``; None: the CPU's default
    weights_fed: str | None = None
    #: builder-specific results :meth:`Builder.settle` reads (int8-ov: the bf16 alternative)
    extra: dict[str, Any] = field(default_factory=dict)


class Builder(Protocol):
    """One variant: how to build it from the shared :class:`~dmeta_embed.export.context.Context`,
    how to time it, and how the timings settle what is written. Register a new one in
    :data:`dmeta_embed.export.builders.BUILDERS`."""

    @property
    def precision(self) -> Precision:
        """The variant it builds."""
        ...

    @property
    def lossy(self) -> bool:
        """Whether a build below its bar may be kept with ``allow_low_fidelity`` (the int8 kinds)."""
        ...

    def unavailable(self) -> str | None:
        """Why this variant cannot be built here (its engine is not installed), or None."""
        ...

    def require(self) -> None:
        """Raise :class:`~dmeta_embed.errors.MissingDependencyError` when it cannot be built here."""
        ...

    def build(self, ctx: Context) -> Candidate:
        """Derive, search (where the variant has a search) and validate the variant."""
        ...

    def speed_runs(self, ctx: Context, cand: Candidate) -> dict[SpeedRun, Start]:
        """The timed runs of this variant (none: it is not timed at export), each as a function
        that starts its engine and returns the pass :func:`~dmeta_embed.export.speed.measure`
        times. The pipeline starts one at a time right after :meth:`build`, times it beside the
        fp32 baseline and drops it before the next."""
        ...

    def settle(self, variant: Variant, cand: Candidate, speeds: dict[SpeedRun, Speed]) -> Variant:
        """The manifest entry once the speed runs are in (records the speed; may pick among
        alternatives that met the bar)."""
        ...


class BaseBuilder:
    """Defaults: always available, not lossy, not timed; ``settle`` records its own run's speed."""

    precision: ClassVar[Precision]
    lossy: ClassVar[bool] = False

    def unavailable(self) -> str | None:
        return None

    def require(self) -> None:
        return None

    def build(self, ctx: Context) -> Candidate:  # pragma: no cover - every builder overrides it
        raise NotImplementedError

    def speed_runs(self, ctx: Context, cand: Candidate) -> dict[SpeedRun, Start]:
        return {}

    def settle(self, variant: Variant, cand: Candidate, speeds: dict[SpeedRun, Speed]) -> Variant:
        from ..speed import SpeedRun

        own = speeds.get(SpeedRun(self.precision, cand.engine_properties))
        return replace(variant, speed=own) if own is not None else variant
