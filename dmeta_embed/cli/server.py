"""``dmeta-embed serve`` (a thin wrapper over ``dmeta_embed.serve``) and the ``bench`` pointer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import click

from ..serve.config import ServerConfig  # a plain dataclass: imports nothing of the server stack
from .options import F, model_option, number_option, provider_option, ray_option, variant_option

#: the API key's default variable (a container sets it with -e; the name can be changed with --api-key-env)
API_KEY_ENV = "DMETA_EMBED_API_KEY"


class WorkersType(click.ParamType):
    """``auto`` (None: the rule in ``runtime.workers``) or a count of at least 1."""

    name = "auto|N"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if value is None or isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return None
        if text.isdigit() and int(text) >= 1:
            return int(text)
        self.fail(f"{value!r} is neither 'auto' nor a whole number of at least 1", param, ctx)


class AutoscaleType(click.ParamType):
    """``MIN:MAX`` replicas for Ray Serve's autoscaler (``serve.replicas.parse_autoscale``)."""

    name = "MIN:MAX"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, int] | None:
        if value is None or isinstance(value, tuple):
            return value
        from ..errors import InputError
        from ..serve.replicas import parse_autoscale

        try:
            return parse_autoscale(str(value))
        except InputError as e:
            self.fail(str(e), param, ctx)


def server_option(flag: str, field: str, text: str, kind: click.ParamType | None = None) -> Callable[[F], F]:
    """An option for one ``ServerConfig`` field, with the dataclass's default (one source of truth)."""
    return number_option(flag, text, default=getattr(ServerConfig(), field), kind=kind, dest=field)


@click.command()
@model_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="DMETA_EMBED_HOST",
    help="Address to bind; 0.0.0.0 exposes the server to the network.",
)
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), envvar="DMETA_EMBED_PORT"
)
@variant_option
@provider_option
@number_option("--threads", "onnxruntime threads (default: CPUs available).")
@number_option(
    "--max-batch-tokens", "Padded tokens per inference batch (default: the runtime's for the provider)."
)
@server_option("--batch-size", "batch_size", "Inputs per inference batch; 1 turns dynamic batching off.")
@server_option(
    "--max-wait-ms",
    "max_wait_ms",
    "How long a request may wait for others to share its batch.",
    click.FloatRange(min=0),
)
@server_option(
    "--max-queue", "max_queue", "Inputs allowed to wait; beyond it requests get 503 with Retry-After."
)
@server_option("--max-inputs", "max_inputs", "Inputs allowed in one request.")
@server_option("--max-documents", "max_documents", "Documents allowed in one rerank request.")
@server_option("--max-chars", "max_chars", "Characters allowed in one input.")
@server_option(
    "--request-timeout",
    "request_timeout_s",
    "Seconds a request may wait in the queue and inference before it gets 503.",
    click.FloatRange(min=0.001),
)
@click.option(
    "--workers",
    type=WorkersType(),
    default="auto",
    show_default=True,
    envvar="DMETA_EMBED_WORKERS",
    help="Inferences run at once, each on its own engine with an equal share of the threads; "
    "auto: 1 on up to 4 cores, more on larger machines (docs/serving.md, 'Workers').",
)
@click.option(
    "--api-key-env",
    default=None,
    metavar="NAME",
    help="Require 'Authorization: Bearer <key>', the key read from environment variable NAME "
    f"(default: {API_KEY_ENV}, when it is set and not empty).",
)
@click.option(
    "--model-name", default=None, help="Name reported as 'model' (default: the export's source model)."
)
@click.option(
    "--rerank-model",
    default=None,
    envvar="DMETA_EMBED_RERANK_MODEL",
    help="A reranker (cross-encoder) served beside --model on /rerank and /v1/rerank: an exported "
    "folder, a hub id or a model folder, as --model. A reranker given as --model is served alone.",
)
@click.option(
    "--rerank-model-name",
    default=None,
    help="Name the --rerank-model is reported by (default: its export's source model).",
)
@ray_option(
    "Serve as Ray Serve replicas behind Ray's HTTP proxy on --host/--port (docs/serving.md, "
    "'Ray Serve'; the model must be a path every node reads)"
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=None,
    help="Ray: this many replicas (default: as many of --replica-cpus as the cluster's CPUs hold).",
)
@click.option(
    "--autoscale",
    type=AutoscaleType(),
    default=None,
    help="Ray: between MIN and MAX replicas, scaled on the requests each holds (e.g. 1:4).",
)
@click.option(
    "--replica-cpus",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Ray: CPUs each replica reserves; they are its onnxruntime threads.",
)
@click.option(
    "--spin/--no-spin",
    default=True,
    show_default=True,
    help="Let onnxruntime threads busy-wait between ops: faster on cores the server has to itself; "
    "use --no-spin when other busy processes share them.",
)
def serve(
    model: str,
    revision: str | None,
    cache_dir: Path | None,
    host: str,
    port: int,
    variant: str,
    provider: str,
    threads: int | None,
    max_batch_tokens: int | None,
    batch_size: int,
    max_wait_ms: float,
    max_queue: int,
    max_inputs: int,
    max_documents: int,
    max_chars: int,
    request_timeout_s: float,
    workers: int | None,
    api_key_env: str | None,
    model_name: str | None,
    rerank_model: str | None,
    rerank_model_name: str | None,
    ray_address: str | None,
    replicas: int | None,
    autoscale: tuple[int, int] | None,
    replica_cpus: int,
    spin: bool,
) -> None:
    """Serve the model over HTTP: OpenAI /v1/embeddings, TEI /embed, /health, /ready, /info, /metrics;
    a reranker's TEI /rerank and Cohere/Jina /v1/rerank."""
    import os

    from ..serve import serve as run_server

    api_key = None
    if api_key_env is None and os.environ.get(API_KEY_ENV):
        api_key_env = API_KEY_ENV
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env, "")
        if not api_key:
            raise click.UsageError(
                f"--api-key-env {api_key_env}: that environment variable is not set or empty"
            )
    config = ServerConfig(
        max_wait_ms=max_wait_ms,
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
        max_queue=max_queue,
        max_inputs=max_inputs,
        max_documents=max_documents,
        max_chars=max_chars,
        request_timeout_s=request_timeout_s,
        api_key=api_key,
        model_name=model_name,
        rerank_model_name=rerank_model_name,
        spin=spin,
        workers=workers,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        click.echo(
            f"warning: serving on {host} without an API key (set {API_KEY_ENV}, or see --api-key-env)",
            err=True,
        )
    if ray_address is None:
        if replicas is not None or autoscale is not None:
            raise click.UsageError("--replicas and --autoscale need --ray")
    else:
        if threads is not None:
            raise click.UsageError("--threads: with --ray each replica's threads are its --replica-cpus")
        if replicas is not None and autoscale is not None:
            raise click.UsageError("give --replicas or --autoscale, not both")
        if rerank_model is not None:
            raise click.UsageError("--rerank-model: Ray Serve replicas host one embedding model")
        from ..cache import resolve_model
        from ..serve.replicas import RaySpec

        spec = RaySpec(
            model=str(resolve_model(model, revision, cache_dir)),  # exported here once, for every replica
            variant=variant,
            provider=provider,
            replica_cpus=replica_cpus,
            replicas=replicas,
            autoscale=autoscale,
            config=replace(config, api_key=None),  # the key travels by its variable's name
            api_key_env=api_key_env if api_key is not None else None,
        )
        from ..serve.ray import run as run_on_ray

        run_on_ray(spec, address=ray_address or True, host=host, port=port, key=api_key)
        return
    run_server(
        model,
        config,
        host=host,
        port=port,
        variant=variant,
        provider=provider,
        threads=threads,
        revision=revision,
        cache_dir=cache_dir,
        rerank_model=rerank_model,
    )


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True}, add_help_option=False
)
def bench() -> None:
    """Benchmarks run from a source checkout: python -m benchmarks (see docs/performance.md)."""
    # the harness is not part of the package (it would install a top-level `benchmarks` module and
    # import the CLI back); this stub only says where it lives
    raise click.ClickException(
        "the benchmark runs from a source checkout of dmeta-embed: "
        "python -m benchmarks --help (see docs/performance.md)"
    )
