"""Options several commands share, with choices taken from the manifest's enums."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..manifest import Precision, Provider

if TYPE_CHECKING:
    from ..runtime import Embedder

MODEL_ENV = "DMETA_EMBED_MODEL"
model_option = click.option(
    "--model",
    "-m",
    "model_dir",
    envvar=MODEL_ENV,
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Exported model folder (env {MODEL_ENV}).",
)
VARIANTS = [p.value for p in Precision]
PROVIDERS = [p.value for p in Provider]

F = TypeVar("F", bound=Callable[..., Any])


def _auto_choice(name: str, values: list[str]) -> Callable[[F], F]:
    """``--name`` among ``auto`` and ``values`` (an enum's), default ``auto``, env DMETA_EMBED_NAME."""
    return click.option(
        f"--{name}",
        type=click.Choice(["auto", *values]),
        default="auto",
        show_default=True,
        envvar=f"DMETA_EMBED_{name.upper()}",
    )


variant_option = _auto_choice("variant", VARIANTS)
provider_option = _auto_choice("provider", PROVIDERS)


def number_option(
    flag: str,
    text: str,
    *,
    default: float | None = None,
    kind: click.ParamType | None = None,
    dest: str | None = None,
) -> Callable[[F], F]:
    """A numeric option: an int of at least 1 unless ``kind`` says otherwise; its default shown
    when it has one (``None``: the command works the value out). ``dest`` names the parameter
    when the flag's own name would not do. Used by the CLI's commands and ``python -m benchmarks``."""
    return click.option(
        flag,
        *([dest] if dest else []),
        type=kind or click.IntRange(min=1),
        default=default,
        show_default=default is not None,
        help=text,
    )


def load(model_dir: Path, variant: str, provider: str, **kw: Any) -> Embedder:
    """``Embedder.load``, imported only by the commands that embed (``--help`` stays fast)."""
    from ..runtime import Embedder

    return Embedder.load(model_dir, variant=variant, provider=provider, **kw)
