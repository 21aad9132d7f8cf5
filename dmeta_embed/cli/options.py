"""Options several commands share, with choices taken from the manifest's enums."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..cache import CACHE_ENV
from ..manifest import Precision, Provider

if TYPE_CHECKING:
    from ..runtime import Embedder

F = TypeVar("F", bound=Callable[..., Any])

MODEL_ENV = "DMETA_EMBED_MODEL"
_model = click.option(
    "--model",
    "-m",
    envvar=MODEL_ENV,
    required=True,
    help="An exported folder, a Hugging Face hub id, or a transformers / sentence-transformers "
    f"folder; the last two are exported once into the cache, then reused (env {MODEL_ENV}).",
)
_revision = click.option(
    "--revision", default=None, help="Hub revision (branch, tag or commit) of a hub id --model."
)
_cache_dir = click.option(
    "--cache-dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    envvar=CACHE_ENV,
    help=f"Where exports of hub ids and model folders are kept (env {CACHE_ENV}; "
    "default ~/.cache/dmeta-embed/exports).",
)


def model_option(f: F) -> F:
    """``--model`` with ``--revision`` and ``--cache-dir``: what ``dmeta_embed.cache`` resolves."""
    return _model(_revision(_cache_dir(f)))


VARIANTS = [p.value for p in Precision]
PROVIDERS = [p.value for p in Provider]


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


def ray_option(what: str) -> Callable[[F], F]:
    """``--ray[=ADDRESS]`` (parameter ``ray_address``: None without the flag, "" alone for
    ``ray.init()``, else the address): ``what`` says what runs on Ray."""
    return click.option(
        "--ray",
        "ray_address",
        is_flag=False,
        flag_value="",
        default=None,
        metavar="[ADDRESS]",
        help=f"{what}: alone for ray.init() (RAY_ADDRESS, else a local Ray), or an address (auto, "
        "ray://head:10001). Put it last or write --ray=ADDRESS.",
    )


def load(model: str, variant: str, provider: str, **kw: Any) -> Embedder:
    """``Embedder.load``, imported only by the commands that embed (``--help`` stays fast);
    ``kw`` carries ``revision`` and ``cache_dir`` from :func:`model_option`."""
    from ..runtime import Embedder

    return Embedder.load(model, variant=variant, provider=provider, **kw)
