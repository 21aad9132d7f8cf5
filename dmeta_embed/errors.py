"""Domain errors. The library raises these; the CLI turns them into one clean line."""

from __future__ import annotations


class DmetaEmbedError(Exception):
    """Base class for every error dmeta-embed raises on purpose."""


class ModelLoadError(DmetaEmbedError):
    """A model folder (source or exported) is missing, incomplete, corrupted or unsupported."""


class ExportError(DmetaEmbedError):
    """Export could not produce a valid folder."""


class FidelityError(ExportError):
    """A variant missed its fidelity bar against the PyTorch reference."""


class VariantsLeftOutError(FidelityError):
    """Some variants missed their bar and were left out; the ones that met theirs were written
    (``output``, ``written``: their names; ``left_out``: name → why)."""

    def __init__(self, message: str, output: str, written: list[str], left_out: dict[str, str]) -> None:
        super().__init__(message)
        self.output, self.written, self.left_out = output, written, left_out


class InputError(DmetaEmbedError, ValueError):
    """Bad input to a runtime call. ``field``: the argument that was wrong, by the runtime's name
    for it (``texts``, ``prompt_name``, ``truncate_dim``, ``normalize``, ``precision``...);
    ``index``: which item of a list argument, where it is one; ``reason``: what was wrong, worded
    to follow the field's name (``f"{name} {reason}"``), for a caller that names the field its own
    way (the server: ``'dimensions'`` for ``truncate_dim``); None where only the message says it.
    Callers map errors by these attributes (the server to its own field names and HTTP
    statuses), never by the message."""

    def __init__(
        self, message: str, index: int | None = None, *, field: str = "texts", reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.index = index
        self.field = field
        self.reason = reason


class TooLongError(InputError):
    """A text is longer than max_length tokens and truncation was turned off."""


class ProviderError(DmetaEmbedError):
    """An execution provider or variant that was asked for explicitly cannot be used."""


class MissingDependencyError(DmetaEmbedError, ImportError):
    """An optional dependency is not installed; the message gives the pip command."""

    def __init__(self, package: str, extra: str, note: str = "") -> None:
        super().__init__(
            f"{package} is not installed; run: pip install 'dmeta-embed[{extra}]'"
            + (f" ({note})" if note else "")
        )
        self.package = package
        self.extra = extra


class RemoteError(DmetaEmbedError):
    """A dmeta-embed server (``base_url`` of an integration) refused a request or could not be
    reached. ``status``: the HTTP status (None when no answer came); the message is the server's."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
