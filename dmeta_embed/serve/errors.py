"""The one error type routes raise; the app renders it as OpenAI's or TEI's JSON error shape."""

from __future__ import annotations

from ..errors import DmetaEmbedError

#: OpenAI's ``error.type`` for each status we send
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    500: "server_error",
    503: "server_overloaded",
}
#: TEI's ``error_type`` for each status (text-embeddings-inference's router)
_TEI_TYPES = {413: "Validation", 422: "Validation", 503: "Overloaded", 500: "Backend", 401: "Unauthorized"}


class ApiError(DmetaEmbedError):
    """A request the server refuses: HTTP status, a message naming what was wrong, and its field."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def openai_body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": _TYPES.get(self.status, "invalid_request_error"),
                "param": self.param,
                "code": self.code,
            }
        }

    def tei_body(self) -> dict[str, object]:
        return {"error": self.message, "error_type": _TEI_TYPES.get(self.status, "Validation")}

    def headers(self) -> dict[str, str]:
        out = {}
        if self.retry_after is not None:
            out["Retry-After"] = str(self.retry_after)
        if self.status == 401:
            out["WWW-Authenticate"] = "Bearer"
        return out
