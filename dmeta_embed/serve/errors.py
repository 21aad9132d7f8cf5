"""Why a request is refused, and the one table that turns every refusal into HTTP.

Parsers and routes raise :class:`RequestError`: a :class:`Kind` and the request field at fault,
no status. The runtime raises ``InputError`` (``TooLongError``) with its own field names and the
batcher raises ``Overloaded``; routes let them all through. At the edge, :func:`to_request_error`
gives each its kind (:data:`EXCEPTIONS`) and the request's field names (:data:`REQUEST_FIELDS`),
and :func:`refusal` the status for the API shape (:data:`STATUS`) and OpenAI's or TEI's error
body: one table, as httpx's ``map_exceptions`` maps transport errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from ..errors import DmetaEmbedError, InputError, TooLongError
from .batcher import Overloaded


class Kind(str, Enum):
    """Why a request gets no vectors; a limit's kind is the limit's name (OpenAI's ``error.code``)."""

    #: the body is not JSON, is empty, or did not arrive whole
    MALFORMED = "malformed"
    #: a field has the wrong type or a value the model does not take
    INVALID = "invalid"
    MAX_INPUTS = "max_inputs"
    MAX_CHARS = "max_chars"
    MAX_BODY_BYTES = "max_body_bytes"
    #: a text is longer than max_length tokens and truncation is off
    MAX_LENGTH = "max_length"
    UNAUTHORIZED = "unauthorized"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"
    CLIENT_CLOSED = "client_closed"
    #: the model is still being exported or loaded
    LOADING = "loading"
    #: the route needs a model of a task this server was not started with (an embedding route on
    #: a server of one reranker, a rerank route on one of one embedder)
    NO_MODEL = "no_model"
    MAX_DOCUMENTS = "max_documents"
    #: Ray Serve: the replica holding the request stopped before answering (another one will)
    REPLICA_LOST = "replica_lost"
    INTERNAL = "internal"


class RequestError(DmetaEmbedError):
    """A request the server refuses: a message naming what was wrong, why (``kind``), and the
    request field at fault (``field``, ``index`` for an item of a list; None where no one field is)."""

    def __init__(
        self, message: str, kind: Kind = Kind.INVALID, *, field: str | None = None, index: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.field = field
        self.index = index


@dataclass(frozen=True)
class Http:
    """How one kind of refusal is answered."""

    openai: int
    tei: int
    #: OpenAI's ``error.code``
    code: str | None = None
    #: seconds sent as Retry-After
    retry_after: int | None = None


#: the one table: each kind's status on OpenAI's endpoints (400 for a bad request, as
#: api.openai.com answers) and on TEI's (422, as text-embeddings-inference answers a well-formed
#: body it cannot take; 400 for one that is not JSON, as its JSON extractor does)
STATUS: dict[Kind, Http] = {
    Kind.MALFORMED: Http(400, 400),
    Kind.INVALID: Http(400, 422),
    Kind.MAX_INPUTS: Http(413, 413, "max_inputs"),
    Kind.MAX_CHARS: Http(413, 413, "max_chars"),
    Kind.MAX_BODY_BYTES: Http(413, 413, "max_body_bytes"),
    Kind.MAX_LENGTH: Http(413, 413, "max_length"),
    Kind.UNAUTHORIZED: Http(401, 401),
    Kind.OVERLOADED: Http(503, 503, "overloaded", retry_after=1),
    Kind.TIMEOUT: Http(503, 503, "timeout", retry_after=1),
    Kind.REPLICA_LOST: Http(503, 503, "replica_lost", retry_after=1),
    Kind.CLIENT_CLOSED: Http(499, 499, "client_closed"),
    Kind.LOADING: Http(503, 503, "loading", retry_after=5),
    # TEI answers 424 on a route its model's kind does not serve; OpenAI 404 for a model it lacks
    Kind.NO_MODEL: Http(404, 424, "model_not_found"),
    # TEI's max_client_batch_size: 413
    Kind.MAX_DOCUMENTS: Http(413, 413, "max_documents"),
    Kind.INTERNAL: Http(500, 500),
}
#: errors from below the routes → their kind; the first class that matches wins
EXCEPTIONS: tuple[tuple[type[Exception], Kind], ...] = (
    (TooLongError, Kind.MAX_LENGTH),
    (InputError, Kind.INVALID),
    (Overloaded, Kind.OVERLOADED),
)
#: the runtime's name for a field → the request's (OpenAI, TEI); a name not here is the same in both
Fields = Mapping[str, tuple[str, str]]
REQUEST_FIELDS: Fields = {
    "texts": ("input", "inputs"),
    "truncate_dim": ("dimensions", "dimensions"),
    "normalize": ("normalize", "normalize"),
    "prompt_name": ("prompt_name", "prompt_name"),
    "precision": ("precision", "precision"),
}
#: the same for the rerank routes (``/v1/rerank``: Cohere's and Jina's names; ``/rerank``: TEI's):
#: the runtime names a pair by its index, the request names the document
RERANK_FIELDS: Fields = {"texts": ("documents", "texts"), "documents": ("documents", "texts")}

#: OpenAI's ``error.type`` for each status we send
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    424: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    500: "server_error",
    503: "server_overloaded",
}
#: TEI's ``error_type`` for each status (text-embeddings-inference's router)
_TEI_TYPES = {
    413: "Validation",
    422: "Validation",
    424: "Backend",
    503: "Overloaded",
    500: "Backend",
    401: "Unauthorized",
}


@dataclass(frozen=True)
class Refusal:
    """An error response: status, JSON body, headers."""

    status: int
    body: dict[str, object]
    headers: dict[str, str]


def error_body(
    status: int, message: str, *, tei: bool, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    """OpenAI's ``{"error": {message, type, param, code}}`` or TEI's ``{"error", "error_type"}``."""
    if tei:
        return {"error": message, "error_type": _TEI_TYPES.get(status, "Validation")}
    kind = _TYPES.get(status, "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def to_request_error(
    exc: Exception, *, tei: bool, max_length: int, fields: Fields = REQUEST_FIELDS
) -> RequestError | None:
    """``exc`` in the request's terms (its kind, the request's field names: ``fields``, the
    route's table), or None for an error that is no refusal (a bug). ``max_length``: the tokens
    a text may have, for MAX_LENGTH."""
    if isinstance(exc, RequestError):
        return exc
    kind = next((k for cls, k in EXCEPTIONS if isinstance(exc, cls)), None)
    if kind is None:
        return None
    if not isinstance(exc, InputError):
        return RequestError(f"{exc}; retry later", kind)
    field = fields.get(exc.field, (exc.field, exc.field))[tei]
    name = field if exc.index is None else f"{field}[{exc.index}]"
    if isinstance(exc, TooLongError):
        message = f"'{name}' is longer than max_length={max_length} tokens; send \"truncate\": true to cut it"
    elif exc.reason is not None:
        message = f"'{name}' {exc.reason}"
    else:
        message = f"'{name}': {exc}"
    return RequestError(message, kind, field=field, index=exc.index)


def refusal(err: RequestError, *, tei: bool) -> Refusal:
    """The response to ``err`` on OpenAI's (``tei=False``) or TEI's endpoints."""
    http = STATUS[err.kind]
    status = http.tei if tei else http.openai
    param = err.field if err.index is None else f"{err.field}[{err.index}]"
    headers = {}
    if http.retry_after is not None:
        headers["Retry-After"] = str(http.retry_after)
    if err.kind is Kind.UNAUTHORIZED:
        headers["WWW-Authenticate"] = "Bearer"
    return Refusal(status, error_body(status, err.message, tei=tei, param=param, code=http.code), headers)
