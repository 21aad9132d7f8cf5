"""Request bodies → checked, typed requests. Every refusal names the field and, for a limit, the limit.

OpenAI's endpoint answers invalid requests with 400 (as api.openai.com does), TEI's with 422 (as
text-embeddings-inference does); both answer a broken limit with 413.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import ServerConfig
from .errors import ApiError

ENCODINGS = ("float", "base64")


@dataclass(frozen=True)
class EmbedRequest:
    """What either endpoint asks the model for."""

    texts: list[str]
    #: True/False: L2-normalise or not (TEI); None: the export's own choice (OpenAI)
    normalize: bool | None = None
    #: False: refuse texts longer than max_length tokens instead of truncating them
    truncate: bool = True
    encoding_format: str = "float"


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


def parse_openai(body: object, cfg: ServerConfig, dim: int) -> EmbedRequest:
    """``POST /v1/embeddings``: input, model, encoding_format, dimensions (user is ignored)."""
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
    dims = body.get("dimensions")
    if dims is not None:
        if not isinstance(dims, int) or isinstance(dims, bool):
            raise ApiError(400, f"'dimensions' must be an integer, got {json_type(dims)}", param="dimensions")
        if dims != dim:
            raise ApiError(
                400,
                f"'dimensions'={dims} is not supported: this model returns {dim}-dimensional "
                f"embeddings only (omit 'dimensions' or send {dim})",
                param="dimensions",
            )
    return EmbedRequest(texts=texts, encoding_format=fmt)


def parse_tei(body: object, cfg: ServerConfig) -> EmbedRequest:
    """``POST /embed`` as text-embeddings-inference takes it: inputs, normalize, truncate."""
    body = _object(body, 422)
    texts = _texts(body.get("inputs"), "inputs", cfg, 422)
    direction = body.get("truncation_direction")
    if direction is not None and direction not in ("right", "Right"):
        raise ApiError(
            422,
            f"'truncation_direction'={direction!r} is not supported; only 'right'",
            param="truncation_direction",
        )
    if body.get("prompt_name") is not None:
        raise ApiError(
            422,
            "'prompt_name' is not supported: this export has no named prompts; "
            "prepend the prompt to each input",
            param="prompt_name",
        )
    return EmbedRequest(
        texts=texts,
        normalize=_bool(body, "normalize", True, 422),
        truncate=_bool(body, "truncate", False, 422),
    )
