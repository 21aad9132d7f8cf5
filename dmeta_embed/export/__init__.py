"""Export: Hugging Face model → folder of ONNX variants. Heavy dependencies, imported lazily.

``export_model`` is resolved on first use, so importing a submodule (a builder, ``graph``) does
not run the whole pipeline's imports, and the package's own ``__init__`` is no link in an import
loop between the pipeline and its builders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipeline import export_model

__all__ = ["export_model"]


def __getattr__(name: str) -> Any:
    if name == "export_model":
        from .pipeline import export_model

        return export_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
