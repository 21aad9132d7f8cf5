"""Request bodies → checked, typed requests. Every refusal names the field and, for a limit, the limit.

OpenAI's endpoint answers invalid requests with 400 (as api.openai.com does), TEI's with 422 (as
text-embeddings-inference does); both answer a broken limit with 413.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..runtime.quantize import PRECISIONS
from .config import ServerConfig
from .errors import ApiError

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


def _texts(value: object, name: str, cfg: ServerConfig, bad: int) -> list[str]:
    if value is None:
        raise ApiError(bad, f"'{name}' is required: a string or an array of strings", param=name)
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list):
        if not value:
            raise ApiError(bad, f"'{name}' is an empty array; send at least one string", param=name)
        items = value
    else:
        raise ApiError(
            bad, f"'{name}' must be a string or an array of strings, got {json_type(value)}", param=name
        )
    if len(items) > cfg.max_inputs:
        raise ApiError(
            413,
            f"'{name}' has {len(items)} items; the limit is max_inputs={cfg.max_inputs} per request",
            param=name,
            code="max_inputs",
        )
    for i, t in enumerate(items):
        if not isinstance(t, str):
            hint = (
                "; token-id input is not supported, send the text"
                if json_type(t) in ("number", "array")
                else ""
            )
            raise ApiError(
                bad, f"'{name}[{i}]' is {json_type(t)}, expected a string{hint}", param=f"{name}[{i}]"
            )
        if len(t) > cfg.max_chars:
            raise ApiError(
                413,
                f"'{name}[{i}]' has {len(t)} characters; the limit is max_chars={cfg.max_chars}",
                param=f"{name}[{i}]",
                code="max_chars",
            )
    return items


def _object(body: object, bad: int) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(bad, f"the request body must be a JSON object, got {json_type(body)}")
    return body


def _bool(body: dict[str, Any], key: str, default: bool, bad: int) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(bad, f"'{key}' must be true or false, got {json_type(value)}", param=key)
    return value


def parse_openai(body: object, cfg: ServerConfig) -> EmbedRequest:
    """``POST /v1/embeddings``: input, model, encoding_format, dimensions, and TEI's prompt_name
    and ``precision`` as extensions (user is ignored). Whether ``dimensions`` is one of the
    model's is the runtime's check."""
    body = _object(body, 400)
    texts = _texts(body.get("input"), "input", cfg, 400)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, f"'model' must be a string, got {json_type(model)}", param="model")
    fmt = body.get("encoding_format")
    fmt = "float" if fmt is None else fmt
    if fmt not in ENCODINGS:
        raise ApiError(
            400, f"'encoding_format' must be 'float' or 'base64', got {fmt!r}", param="encoding_format"
        )
    return EmbedRequest(
        texts=texts,
        encoding_format=fmt,
        dimensions=_int(body, "dimensions", 400),
        prompt_name=_str(body, "prompt_name", 400),
        precision=_precision(body, 400),
    )


def _int(body: dict[str, Any], key: str, bad: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ApiError(
            bad, f"'{key}' must be an integer of at least 1, got {json_type(value)} {value!r}", param=key
        )
    return value


def _str(body: dict[str, Any], key: str, bad: int) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ApiError(bad, f"'{key}' must be a string, got {json_type(value)}", param=key)
    return value


def _precision(body: dict[str, Any], bad: int) -> str:
    value = _str(body, PRECISION_FIELD, bad) or "float32"
    if value not in PRECISIONS:
        raise ApiError(
            bad,
            f"'{PRECISION_FIELD}' must be one of {', '.join(PRECISIONS)}, got {value!r}",
            param=PRECISION_FIELD,
        )
    return value


def parse_tei(body: object, cfg: ServerConfig) -> EmbedRequest:
    """``POST /embed`` as text-embeddings-inference takes it: inputs, normalize, truncate,
    truncation_direction (right only), prompt_name, dimensions; plus ``precision``."""
    body = _object(body, 422)
    texts = _texts(body.get("inputs"), "inputs", cfg, 422)
    direction = body.get("truncation_direction")
    if direction is not None and direction not in ("right", "Right"):
        raise ApiError(
            422,
            f"'truncation_direction'={direction!r} is not supported; only 'right'",
            param="truncation_direction",
        )
    return EmbedRequest(
        texts=texts,
        normalize=_bool(body, "normalize", True, 422),
        truncate=_bool(body, "truncate", False, 422),
        dimensions=_int(body, "dimensions", 422),
        prompt_name=_str(body, "prompt_name", 422),
        precision=_precision(body, 422),
    )


def parse_tokenize(body: object, cfg: ServerConfig) -> TokenizeRequest:
    """``POST /tokenize`` as text-embeddings-inference takes it: inputs, add_special_tokens,
    prompt_name."""
    body = _object(body, 422)
    return TokenizeRequest(
        texts=_texts(body.get("inputs"), "inputs", cfg, 422),
        add_special_tokens=_bool(body, "add_special_tokens", True, 422),
        prompt_name=_str(body, "prompt_name", 422),
    )
