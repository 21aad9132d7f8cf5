"""Options several commands share, with choices taken from the manifest's enums."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

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
variant_option = click.option(
    "--variant",
    type=click.Choice(["auto", *VARIANTS]),
    default="auto",
    show_default=True,
    envvar="DMETA_EMBED_VARIANT",
)
provider_option = click.option(
    "--provider",
    type=click.Choice(["auto", *PROVIDERS]),
    default="auto",
    show_default=True,
    envvar="DMETA_EMBED_PROVIDER",
)


def load(model_dir: Path, variant: str, provider: str, **kw: Any) -> Embedder:
    """``Embedder.load``, imported only by the commands that embed (``--help`` stays fast)."""
    from ..runtime import Embedder

    return Embedder.load(model_dir, variant=variant, provider=provider, **kw)
