"""The one way to say "an optional dependency is missing": :func:`require`, reading one table.

Every extra-backed import goes through it, so a base install (no ``[cpu]``, ``[export]`` or
``[server]``) answers with the ``pip install`` line to run, never a traceback. Which extra
installs which module lives only here (:data:`EXTRAS`), beside what each feature needs
(:data:`FEATURES`). Standard library only.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
from types import ModuleType

from .errors import MissingDependencyError

#: top-level module → the extra that installs it (``pip install 'dmeta-embed[extra]'``)
EXTRAS: dict[str, str] = {
    "onnxruntime": "cpu",
    "openvino": "openvino",
    "nncf": "export-openvino",
    "torch": "export",
    "transformers": "export",
    "onnx": "export",
    "huggingface_hub": "export",
    "starlette": "server",
    "uvicorn": "server",
    "prometheus_client": "server",
    "pyarrow": "corpus",
    "ray": "ray",
    "langchain_core": "langchain",
    "llama_index": "llama-index",
    "mteb": "mteb",
}
#: what the error adds for a module, where the extra alone would mislead
NOTES: dict[str, str] = {
    "onnxruntime": "or [gpu] on an NVIDIA machine; never both",
    "openvino": "the int8-ov and bf16 variants' engine",
    "mteb": "mteb needs torch; the runtime does not",
}
#: the modules a feature needs, checked together before it starts (an extra's name)
FEATURES: dict[str, tuple[str, ...]] = {
    # the export validates every variant on onnxruntime: checked first, before any file is read
    "export": ("onnxruntime", "torch", "transformers", "onnx", "huggingface_hub"),
    "export-openvino": ("nncf", "openvino"),
    "server": ("starlette", "uvicorn", "prometheus_client"),
    "corpus": ("pyarrow",),
    "ray": ("pyarrow", "ray", "ray.data"),
}


def require(*modules: str, extra: str | None = None) -> ModuleType:
    """Import each module and return the first, or raise :class:`MissingDependencyError` naming
    the extra that installs it (``extra`` when given, else :data:`EXTRAS`), chained from the
    ImportError."""
    if not modules:
        raise TypeError("require() needs at least one module name")
    loaded = []
    for module in modules:
        top = module.split(".")[0]
        name = extra or EXTRAS[top]  # a module missing from the table fails here, installed or not
        try:
            loaded.append(importlib.import_module(module))
        except ImportError as e:
            raise MissingDependencyError(module, name, NOTES.get(top, "")) from e
    return loaded[0]


#: extras no feature's extra installs: onnxruntime comes from [cpu] or [gpu] (never both)
ENGINE_EXTRAS = frozenset({"cpu"})


def require_feature(feature: str) -> None:
    """Check every module ``feature`` (a key of :data:`FEATURES`) needs; the error names that
    extra (or, for the engine, the extra that installs it)."""
    for module in FEATURES[feature]:
        own = EXTRAS[module.split(".")[0]]
        require(module, extra=own if own in ENGINE_EXTRAS else feature)


def check_feature(feature: str) -> None:
    """:func:`require_feature` without importing anything (each module is only found): for a
    caller that must answer at once and imports later (a server binds its port, then exports)."""
    for module in FEATURES[feature]:
        top = module.split(".")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a missing parent package, or None in sys.modules
            found = False
        if not found:
            own = EXTRAS[top]
            raise MissingDependencyError(module, own if own in ENGINE_EXTRAS else feature, NOTES.get(top, ""))


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution (``pip``'s name), or None when it is not installed."""
    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        return None
