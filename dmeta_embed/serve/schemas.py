"""Request bodies → checked, typed requests. Every refusal is a ``RequestError`` naming the field
and its kind (``invalid``, or the limit it breaks); which status that is on which API is decided
at the server's edge (``serve.errors.STATUS``), not here.

What only the model can judge (a ``dimensions`` or ``precision`` it does not take, an unknown
``prompt_name``, ``normalize: false`` on a normalised export) is the runtime's check, made once
there (``runtime.options.check_output``, ``resolve_prompt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import ServerConfig
from .errors import Kind, RequestError

ENCODINGS = ("float", "base64")
#: the request field naming the output precision (infinity's embedding dtype, sentence-transformers'
#: names); ``encoding_format`` still says how the numbers are written (JSON or base64 bytes)
PRECISION_FIELD = "precision"


@dataclass(frozen=True)
class EmbedRequest:
    """What either endpoint asks the model for."""

    texts: list[str]
    #: True/False: L2-normalise or not (TEI); None: the export's own choice (OpenAI)
    normalize: bool | None = None
    #: False: refuse texts longer than max_length tokens instead of truncating them
    truncate: bool = True
    encoding_format: str = "float"
    #: Matryoshka dims to return (OpenAI ``dimensions``, TEI ``dimensions``); None: all
    dimensions: int | None = None
    #: one of the model's named prompts (TEI ``prompt_name``); None: the default prompt
    prompt_name: str | None = None
    #: float32, int8, uint8, binary or ubinary (sentence-transformers' quantization)
    precision: str = "float32"


@dataclass(frozen=True)
class TokenizeRequest:
    """TEI's ``POST /tokenize``."""

    texts: list[str]
    add_special_tokens: bool = True
    prompt_name: str | None = None


def json_type(value: object) -> str:
    """A JSON value's type name, for messages ('number', not 'int')."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _texts(value: object, name: str, cfg: ServerConfig) -> list[str]:
    if value is None:
        raise RequestError(f"'{name}' is required: a string or an array of strings", field=name)
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list):
        if not value:
            raise RequestError(f"'{name}' is an empty array; send at least one string", field=name)
        items = value
    else:
        raise RequestError(
            f"'{name}' must be a string or an array of strings, got {json_type(value)}", field=name
        )
    if len(items) > cfg.max_inputs:
        raise RequestError(
            f"'{name}' has {len(items)} items; the limit is max_inputs={cfg.max_inputs} per request",
            Kind.MAX_INPUTS,
            field=name,
        )
    for i, t in enumerate(items):
        if not isinstance(t, str):
            hint = (
                "; token-id input is not supported, send the text"
                if json_type(t) in ("number", "array")
                else ""
            )
            raise RequestError(
                f"'{name}[{i}]' is {json_type(t)}, expected a string{hint}", field=name, index=i
            )
        if len(t) > cfg.max_chars:
            raise RequestError(
                f"'{name}[{i}]' has {len(t)} characters; the limit is max_chars={cfg.max_chars}",
                Kind.MAX_CHARS,
                field=name,
                index=i,
            )
    return items


def _object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {json_type(body)}")
    return body


def _right_only(body: dict[str, Any]) -> None:
    """TEI's ``truncation_direction``: only ``right`` (the runtime truncates at the end)."""
    direction = body.get("truncation_direction")
    if direction is not None and direction not in ("right", "Right"):
        raise RequestError(
            f"'truncation_direction'={direction!r} is not supported; only 'right'",
            field="truncation_direction",
        )


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"'{key}' must be true or false, got {json_type(value)}", field=key)
    return value


def _int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RequestError(
            f"'{key}' must be an integer of at least 1, got {json_type(value)} {value!r}", field=key
        )
    return value


def _str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise RequestError(f"'{key}' must be a string, got {json_type(value)}", field=key)
    return value


def parse_openai(body: object, cfg: ServerConfig) -> EmbedRequest:
    """``POST /v1/embeddings``: input, model, encoding_format, dimensions, and TEI's prompt_name
    and ``precision`` as extensions (user is ignored)."""
    body = _object(body)
    texts = _texts(body.get("input"), "input", cfg)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(f"'model' must be a string, got {json_type(model)}", field="model")
    fmt = body.get("encoding_format")
    fmt = "float" if fmt is None else fmt
    if fmt not in ENCODINGS:
        raise RequestError(
            f"'encoding_format' must be 'float' or 'base64', got {fmt!r}", field="encoding_format"
        )
    return EmbedRequest(
        texts=texts,
        encoding_format=fmt,
        dimensions=_int(body, "dimensions"),
        prompt_name=_str(body, "prompt_name"),
        precision=_str(body, PRECISION_FIELD) or "float32",
    )


def parse_tei(body: object, cfg: ServerConfig) -> EmbedRequest:
    """``POST /embed`` as text-embeddings-inference takes it: inputs, normalize, truncate,
    truncation_direction (right only), prompt_name, dimensions; plus ``precision``."""
    body = _object(body)
    texts = _texts(body.get("inputs"), "inputs", cfg)
    _right_only(body)
    return EmbedRequest(
        texts=texts,
        normalize=_bool(body, "normalize", True),
        truncate=_bool(body, "truncate", False),
        dimensions=_int(body, "dimensions"),
        prompt_name=_str(body, "prompt_name"),
        precision=_str(body, PRECISION_FIELD) or "float32",
    )


def parse_tokenize(body: object, cfg: ServerConfig) -> TokenizeRequest:
    """``POST /tokenize`` as text-embeddings-inference takes it: inputs, add_special_tokens,
    prompt_name."""
    body = _object(body)
    return TokenizeRequest(
        texts=_texts(body.get("inputs"), "inputs", cfg),
        add_special_tokens=_bool(body, "add_special_tokens", True),
        prompt_name=_str(body, "prompt_name"),
    )
