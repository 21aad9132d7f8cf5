"""A call's output options checked against the export, in one place.

``Pipeline.output_spec`` (what ``encode`` and the server use) and the ``truncate_dim`` setter
ask :func:`check_output`; a refusal is an InputError whose ``field`` names the option
(``truncate_dim``, ``normalize``, ``precision``) and whose ``reason`` follows any name for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from .quantize import check_precision

if TYPE_CHECKING:
    from ..manifest import Manifest


@dataclass(frozen=True)
class OutputSpec:
    """What happens to the model's vectors before they are returned (checked once, per call)."""

    #: Matryoshka dims to keep (None: all)
    dim: int | None = None
    #: L2-normalise after the cut (the model's own normalisation sits inside the graph)
    normalize: bool = False
    #: float32, int8, uint8, binary or ubinary (``runtime.quantize``)
    precision: str = "float32"
    #: int8/uint8: per-dimension ``[min, max]`` (2, dim) of the cut, normalised vectors
    ranges: np.ndarray | None = None


def check_output(
    manifest: Manifest,
    truncate_dim: int | None = None,
    normalize: bool | None = None,
    precision: str = "float32",
) -> OutputSpec:
    """What to do to the model's vectors (no ``ranges``: the caller adds them for int8/uint8).

    ``truncate_dim``: the model's dim or one of the Matryoshka dims the manifest lists (the model's
    dim or more: no cut). ``normalize``: None keeps the export's choice (inside the graph); True
    L2-normalises after a cut, or a raw export's vectors; False is refused for a normalised
    export. ``precision``: one of ``runtime.quantize.PRECISIONS``."""
    if normalize is False and manifest.normalize:
        reason = (
            "cannot be turned off: this model was exported with normalisation inside the graph "
            "(re-export with --no-normalize to get raw vectors)"
        )
        # encode's keyword is sentence-transformers' normalize_embeddings
        raise InputError(f"normalize_embeddings {reason}", field="normalize", reason=reason)
    dim = truncate_dim
    if dim is not None and dim != manifest.dim and dim not in manifest.truncate_dims:
        raise _bad_dim(manifest, dim)
    if dim is not None and dim >= manifest.dim:
        dim = None
    renormalize = bool(normalize) and (dim is not None or not manifest.normalize)
    return OutputSpec(dim, renormalize, check_precision(precision))


def _bad_dim(manifest: Manifest, dim: int) -> InputError:
    cuts = sorted(manifest.truncate_dims, reverse=True)
    also = (
        f", or one of the Matryoshka dims it was exported with ({', '.join(map(str, cuts))})"
        if cuts
        else " only (this export lists no Matryoshka dims; re-export with --truncate-dims "
        "D1,D2,... if the model was trained for them)"
    )
    reason = f"cannot be {dim}: this model returns {manifest.dim}-dimensional embeddings{also}"
    return InputError(f"truncate_dim {reason}", field="truncate_dim", reason=reason)
