"""What ``--model`` names → an exported folder: the export cache.

``Embedder.load``, ``serve`` and the CLI's ``--model`` take an exported folder (used as it is), a
transformers or sentence-transformers folder, or a Hugging Face hub id. A model that is not an
exported folder is exported once, with the default variants, into the user cache, and every
later start reuses that export. An entry is keyed by what it was made from (the hub id and
revision, or a local folder's resolved path and a fingerprint of its files), the package version
and the CPU class (the export measures each variant's speed on its CPU class, and ``auto`` ranks
by those figures); a json beside it says what, and which default variants the export tried and
which it skipped for an engine not installed then. An entry that skipped a variant whose engine
is installed now, where the export can run, is exported again (:func:`newly_buildable`): the
installed engines are not in the key, so that an image without the exporter still finds an
entry another image exported. Exports are built in a temporary folder of the cache and moved
into place whole, under a lock file: two processes starting at once export once.

Standard library only: the exporter (torch, transformers) is imported only when an export runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any

from ._optional import check_feature, require_feature
from ._version import __version__
from .errors import MissingDependencyError, ModelLoadError, VariantsLeftOutError
from .manifest import MANIFEST_NAME

log = logging.getLogger(__name__)

#: environment variable naming the export cache folder
CACHE_ENV = "DMETA_EMBED_CACHE"
#: a hub id: ``name`` or ``org/name`` (the hub's own rule: letters, digits, ``-``, ``_``, ``.``)
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
#: told when an export starts (figures: docs/export.md, "Export wall time")
TYPICAL = "about a minute for a small model, 3 to 6 minutes for a base-size one on a small CPU"

Progress = Callable[[str], None]


def to_stderr(line: str) -> None:
    """The default progress: one ``dmeta-embed:`` line on stderr."""
    print(f"dmeta-embed: {line}", file=sys.stderr, flush=True)


class Kind(str, Enum):
    """What ``--model`` named."""

    #: an exported folder (``manifest.json``): used as it is
    EXPORTED = "exported"
    #: a transformers or sentence-transformers folder (``config.json``): exported into the cache
    FOLDER = "folder"
    #: a Hugging Face hub id: exported into the cache
    HUB = "hub"


@dataclass(frozen=True)
class ModelSource:
    """A model as named, and where its exported folder is (or will be, once exported)."""

    #: the hub id, or the folder's resolved path
    model: str
    kind: Kind
    #: the exported folder: the model itself, or its cache entry
    folder: Path
    revision: str | None = None
    #: what the cache key is made from (empty for an exported folder)
    made_from: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The cache entry's name: ``<readable name>-<12 hex of the hash of made_from>``."""
        return self.folder.name

    @property
    def name(self) -> str:
        """A readable name: the hub id, or the folder's name."""
        return self.model if self.kind is Kind.HUB else Path(self.model).name

    @property
    def needs_export(self) -> bool:
        return not (self.folder / MANIFEST_NAME).is_file()


def default_cache_dir() -> Path:
    """Where exports are cached: ``$DMETA_EMBED_CACHE``, else ``$XDG_CACHE_HOME/dmeta-embed/exports``
    (``~/.cache/...``), beside OpenVINO's compiled-model cache (``.../dmeta-embed/openvino``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dmeta-embed" / "exports"


def locate(
    model: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    *,
    version: str = __version__,
    cpu_class: str | None = None,
) -> ModelSource:
    """What ``model`` names and where its export is; nothing is exported. A ``Path`` or a string
    that is not a hub id is a folder, refused with a ModelLoadError where it is missing or is no
    model; a hub id (``org/name``, ``name``) that is also an existing folder is the folder.
    ``version``, ``cpu_class``: the key's package version and CPU class (this machine's when None)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():
            if revision:
                log.warning("%s is an exported folder: revision %r ignored", model, revision)
            return ModelSource(str(path), Kind.EXPORTED, path)
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{model}: neither an exported folder (no {MANIFEST_NAME}) nor a transformers or "
                "sentence-transformers model folder (no config.json)"
            )
        kind, name = Kind.FOLDER, str(path.resolve())
        made_from: dict[str, Any] = {"model": name, "files": fingerprint(path)}
    elif path.exists():
        raise ModelLoadError(f"{model} is a file; give a model folder or a hub id")
    elif isinstance(model, str) and _is_hub_id(model):
        kind, name = Kind.HUB, model
        made_from = {"model": name}
    else:
        raise ModelLoadError(f"model folder not found: {model}")
    if cpu_class is None:
        from .runtime.cpu import detect  # standard library only

        cpu_class = detect().cpu_class.value
    made_from.update({"revision": revision, "dmeta-embed": version, "cpu_class": cpu_class})
    digest = hashlib.sha256(json.dumps(made_from, sort_keys=True).encode()).hexdigest()[:12]
    readable = re.sub(
        r"[^A-Za-z0-9._-]+", "-", name.replace("/", "--") if kind is Kind.HUB else Path(name).name
    )
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return ModelSource(name, kind, root / f"{readable.strip('-.')[:64]}-{digest}", revision, made_from)


def _is_hub_id(model: str) -> bool:
    """``org/name`` or ``name``, and not a path: ``out/m`` where ``out`` is a folder here is a
    missing folder, not a hub lookup."""
    if not HUB_ID.match(model) or ".." in model or "--" in model:
        return False
    return "/" not in model or not Path(model.split("/")[0]).is_dir()


def fingerprint(folder: Path) -> str:
    """A hash of the folder's files (names, sizes, modification times; hidden ones left out):
    an edited or replaced model file gives another key."""
    rows = []
    for top, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            p = Path(top, name)
            st = p.stat()
            rows.append(f"{p.relative_to(folder).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def resolve_model(
    model: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    *,
    progress: Progress | None = to_stderr,
) -> Path:
    """The exported folder for ``model`` (:func:`locate`), exported first where it has none
    (:func:`ensure`). ``progress``: where the export's lines go (None: nowhere)."""
    return ensure(locate(model, revision, cache_dir), progress=progress)


def variants_here() -> tuple[list[str], dict[str, str]] | None:
    """What an export would build here (:func:`~dmeta_embed.export.builders.default_variants`):
    the default variants whose engine is installed, and why each other one is skipped; None where
    the export extra is not installed (nothing is imported: the builders find their modules)."""
    try:
        check_feature("export")
    except MissingDependencyError:
        return None
    from .export.builders import default_variants  # no engine or torch imported

    chosen, skipped = default_variants()
    return [p.value for p in chosen], {p.value: why for p, why in skipped.items()}


def newly_buildable(source: ModelSource) -> list[str]:
    """The variants ``source``'s cache entry skipped for an engine not installed then that an
    export here would build (:func:`variants_here`): its reason to be exported again. Empty for
    an exported folder, an entry not made yet or made before entries recorded what they skipped,
    and where the export extra is not installed (the entry is used as it is)."""
    if source.kind is Kind.EXPORTED or source.needs_export:
        return []
    try:
        made = json.loads((source.folder.parent / f"{source.key}.json").read_text("utf-8"))
    except (OSError, ValueError):
        return []
    skipped = made.get("skipped") if isinstance(made, dict) else None
    if not isinstance(skipped, dict) or not skipped:
        return []
    here = variants_here()
    return [] if here is None else [v for v in here[0] if v in skipped]


def must_export(source: ModelSource) -> bool:
    """Whether :func:`ensure` will export: no entry yet, or one :func:`newly_buildable` names."""
    return source.needs_export or bool(newly_buildable(source))


def ensure(source: ModelSource, *, progress: Progress | None = to_stderr) -> Path:
    """``source``'s exported folder, exported into the cache first where it is not there yet.

    Under a lock file beside the entry: a second process waits for the first's export, then
    reuses it. The export is built in a temporary folder of the cache and moved into place whole,
    so an entry with a manifest is complete, and a failed export leaves no entry (the next call
    tries again). An entry :func:`newly_buildable` names is exported again the same way and
    replaced whole once the new one is made."""
    if not must_export(source):
        if source.kind is not Kind.EXPORTED:
            log.info("%s: using the cached export %s", source.name, source.folder)
        return source.folder
    require_export(source)  # a base install is told at once, before any file is written
    say = progress or (lambda line: None)
    root = source.folder.parent
    root.mkdir(parents=True, exist_ok=True)
    waiting = f"waiting for another process exporting {source.name} into {source.folder}"
    with _locked(root / f"{source.key}.lock", lambda: say(waiting)):
        newly = newly_buildable(source)
        if not source.needs_export and not newly:
            say(f"using the export another process made: {source.folder}")
            return source.folder
        # holding the lock, nobody else builds this entry: what is there is left from a crash
        for stale in root.glob(f".{source.key}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{source.key}.partial-", dir=root))
        try:
            t0 = time.perf_counter()
            if newly:
                say(
                    f"{source.name}: the cached export {source.folder} has no {', '.join(newly)} "
                    f"(not installed when it was made); exporting it again ({TYPICAL})"
                )
            else:
                say(
                    f"{source.name} is not an exported folder: exporting it once into {source.folder} "
                    f"({TYPICAL}; later loads reuse it)"
                )
            here = variants_here() or ([], {})
            with _stages_shown(progress is not None):
                run_export(source.model, staging / "model", source.revision)
            seconds = round(time.perf_counter() - t0, 1)
            made = {
                **source.made_from,
                "kind": source.kind.value,
                "export_seconds": seconds,
                "variants": here[0],
                "skipped": here[1],
            }
            (staging / "made_from.json").write_text(json.dumps(made, indent=2) + "\n", "utf-8")
            if source.folder.exists():  # the entry replaced, or one left without its manifest
                os.replace(source.folder, staging / "old")
            os.replace(staging / "model", source.folder)
            os.replace(staging / "made_from.json", root / f"{source.key}.json")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        say(f"exported {source.name} in {seconds:.0f} s: {source.folder}")
        return source.folder


def require_export(source: ModelSource, *, quick: bool = False) -> None:
    """Where ``source`` needs exporting, check the export extra; its absence is a
    MissingDependencyError with the pip line and the two-step alternative. ``quick``: find the
    modules without importing them (torch and transformers take seconds to import)."""
    if not source.needs_export:
        return
    try:
        if quick:
            check_feature("export")
        else:
            require_feature("export")
    except MissingDependencyError as e:
        raise MissingDependencyError(
            e.package,
            e.extra,
            f"{source.name} is not an exported folder and exporting it needs [{e.extra}]; or export it "
            f"where that is installed, dmeta-embed export {source.model} -o DIR, and give DIR as the model",
        ) from e


def run_export(model: str, output: Path, revision: str | None) -> None:
    """The export with the default variants (imported here: torch and transformers load only now).
    Variants that missed their bar are left out with a warning; the others are written."""
    from .export import export_model

    try:
        export_model(model, output, revision=revision)
    except VariantsLeftOutError as e:
        log.warning("%s", e)


@contextmanager
def _stages_shown(show: bool) -> Iterator[None]:
    """Let the export's stage lines (``dmeta_embed.export`` INFO) reach stderr during the block,
    also where logging is not configured (a library caller)."""
    logger = logging.getLogger("dmeta_embed.export")
    saved = logger.level
    handler: logging.Handler | None = None
    if show and logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    if show and not logger.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("dmeta-embed export: %(message)s"))
        logger.addHandler(handler)
    try:
        yield
    finally:
        logger.setLevel(saved)
        if handler is not None:
            logger.removeHandler(handler)


@contextmanager
def _locked(path: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing; released when the process dies)."""
    with open(path, "a+b") as f:
        if not _try_lock(f):
            on_wait()
            while not _try_lock(f, block=True):
                time.sleep(0.5)
        yield  # closing the file releases the lock


def _try_lock(f: IO[bytes], block: bool = False) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False
