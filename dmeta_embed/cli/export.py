"""``dmeta-embed export``: a Hugging Face model → a validated folder of ONNX variants (the flags are
the export's: ``dmeta_embed.export.export_model``)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..errors import VariantsLeftOutError
from .info import summary
from .options import VARIANTS


@click.command()
@click.argument("model", default="DMetaSoul/Dmeta-embedding")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Folder to create.")
@click.option(
    "--variants",
    default=None,
    help="Comma-separated: fp32, fp16, int8, int8-ov (needs the export-openvino extra), bf16 (needs "
    "openvino and a CPU with native bf16: AMX or AVX512-BF16). "
    "Default: every variant `auto` can choose whose engine is installed here "
    "(int8-ov where nncf and openvino import, bf16 where openvino imports and bf16 is native).",
)
@click.option(
    "--pooling",
    type=click.Choice(["cls", "mean", "last"]),
    default=None,
    help="Used only when the model has no 1_Pooling/config.json (default then: cls).",
)
@click.option("--max-length", type=int, default=None, help="Override the model's max sequence length.")
@click.option("--no-normalize", is_flag=True, help="Do not L2-normalise inside the graph.")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--allow-low-fidelity", is_flag=True, help="Keep an int8 variant that misses its bar.")
@click.option(
    "--trust-remote-code", is_flag=True, help="Run the model repository's own Python code (off by default)."
)
@click.option(
    "--truncate-dims",
    default="",
    metavar="D1,D2,...",
    help="Matryoshka dims the model was trained for: encode(truncate_dim=...) accepts only these.",
)
@click.option(
    "--activation",
    type=click.Choice(["sigmoid", "softmax", "identity"]),
    default=None,
    help="A cross-encoder's score activation, over what its files say (default: theirs, else "
    "sigmoid for one label, identity for several, as sentence-transformers' CrossEncoder).",
)
def export(
    model: str,
    output: Path,
    variants: str | None,
    pooling: str | None,
    max_length: int | None,
    no_normalize: bool,
    revision: str | None,
    force: bool,
    allow_low_fidelity: bool,
    trust_remote_code: bool,
    truncate_dims: str,
    activation: str | None,
) -> None:
    """Export MODEL (hub id or local folder) to a validated folder of ONNX variants. A cross-encoder
    (a ...ForSequenceClassification model) becomes a rerank folder (``dmeta-embed rerank``)."""
    from ..export import export_model

    logging.getLogger("dmeta_embed").setLevel(min(logging.getLogger("dmeta_embed").level, logging.INFO))
    names = None if variants is None else [v.strip() for v in variants.split(",") if v.strip()]
    bad = [v for v in names or () if v not in VARIANTS]
    if bad:
        raise click.BadParameter(
            f"unknown variant(s) {bad}; choose from {', '.join(VARIANTS)}", param_hint="--variants"
        )
    try:
        manifest = export_model(
            model,
            output,
            variants=names,
            pooling=pooling,
            max_length=max_length,
            normalize=False if no_normalize else None,
            revision=revision,
            force=force,
            allow_low_fidelity=allow_low_fidelity,
            trust_remote_code=trust_remote_code,
            truncate_dims=_int_list(truncate_dims, "--truncate-dims"),
            activation=activation,
        )
    except VariantsLeftOutError:
        # what met its bar is written: show it, then main() prints the one Error line (exit 1)
        click.echo(f"exported {model} → {output}, without the variants that missed their bar")
        click.echo(summary(output))
        raise
    click.echo(f"exported {manifest.source['model']} → {output}")
    click.echo(summary(output))


def _int_list(value: str, hint: str) -> list[int]:
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError as e:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint=hint) from e
