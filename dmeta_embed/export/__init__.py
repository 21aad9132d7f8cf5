"""Export: Hugging Face model → folder of ONNX variants. Heavy dependencies, imported lazily."""

from .pipeline import export_model

__all__ = ["export_model"]
