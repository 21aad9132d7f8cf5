"""The one way to say "an optional dependency is missing": :func:`require`.

Every extra-backed import goes through it, so a base install (no ``[cpu]``, ``[export]`` or
``[server]``) answers with the ``pip install`` line to run, never a traceback. Standard library only.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError


def require(module: str, extra: str, note: str = "") -> ModuleType:
    """Import ``module`` and return it, or raise :class:`MissingDependencyError` naming the extra
    (``pip install 'dmeta-embed[extra]'``) and ``note``, chained from the ImportError."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(module, extra, note) from e
