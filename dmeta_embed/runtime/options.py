"""A call's output options checked against the manifest, once, for every surface."""

from __future__ import annotations

from ..errors import InputError
from ..manifest import Manifest
from .quantize import check_precision


def check_output(
    manifest: Manifest, truncate_dim: int | None, normalize: bool | None, precision: str
) -> tuple[int | None, bool, str]:
    """(dims to keep or None for all, whether to L2-normalise after the cut, precision)."""
    if normalize is False and manifest.normalize:
        raise InputError(
            "this folder was exported with normalisation inside the graph; "
            "re-export with --no-normalize to get raw vectors",
            field="normalize",
        )
    dim = truncate_dim
    if dim is not None and dim != manifest.dim:
        supported = manifest.truncate_dims
        if dim not in supported:
            raise InputError(
                f"truncate_dim={dim} is not one of this export's Matryoshka dims "
                f"({', '.join(map(str, supported)) or 'none'})",
                field="truncate_dim",
            )
    if dim is not None and dim >= manifest.dim:
        dim = None
    renorm = bool(normalize) and (dim is not None or not manifest.normalize)
    return dim, renorm, check_precision(precision)
