"""What ``serve --model`` serves: an exported folder as it is; a Hugging Face model (hub id or a
model folder) exported once into the cache and served from there, so one ``docker run`` of the
cpu-export image starts a service from a hub id. Exporting needs the ``export`` extra."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ..manifest import MANIFEST_NAME

log = logging.getLogger("dmeta_embed")


def export_cache() -> Path:
    """Where ``serve`` keeps its exports: ``$XDG_CACHE_HOME/dmeta-embed/exports`` (``~/.cache/...``);
    the images set XDG_CACHE_HOME=/cache, a volume, so a restart reuses the export."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dmeta-embed" / "exports"


def served_folder(model: Path, variant: str) -> Path:
    """``model`` when it holds a manifest, or a directory that is no Hugging Face model (the
    runtime then says what is wrong with it); otherwise its export in :func:`export_cache`, made
    on first use. ``variant`` other than ``auto``: only that variant is exported."""
    if (model / MANIFEST_NAME).is_file() or (model.is_dir() and not (model / "config.json").is_file()):
        return model
    from .._optional import require_feature
    from ..errors import MissingDependencyError, VariantsLeftOutError

    try:
        require_feature("export")
    except MissingDependencyError as e:
        note = f"{model} is not an exported folder: serving it exports it first (the cpu-export image can)"
        raise MissingDependencyError(e.package, e.extra, note) from e
    source = str(model.resolve()) if model.is_dir() else str(model)
    name = re.sub(r"[^\w.-]+", "--", source.strip("/")) + ("" if variant == "auto" else f"--{variant}")
    target = export_cache() / name
    if (target / MANIFEST_NAME).is_file():
        log.warning("serving %s from its export in %s", source, target)
        return target
    from ..export import export_model

    log.warning("exporting %s into %s (once: later starts reuse it)", source, target)
    log.setLevel(min(log.level, logging.INFO))  # the export reports its steps at INFO
    try:
        export_model(source, target, variants=None if variant == "auto" else [variant])
    except VariantsLeftOutError as e:
        # what met its bar is written and served; the export's log says what was left out and why
        log.warning("%s", e)
    return target
