"""ApiError: a failure with an HTTP status, rendered as OpenAI-style JSON {"error": {"message", "type"}}."""

from __future__ import annotations

from strata.errors import StrataError

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
         405: "invalid_request_error", 409: "conflict_error", 413: "request_too_large", 422: "unprocessable_entity",
         429: "rate_limit_error",
         499: "client_closed_request", 500: "server_error", 503: "unavailable_error"}


class ApiError(StrataError):
    """A user-facing serving failure carrying its HTTP status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        # a message quoting the client's own bad text (a lone surrogate) must still encode as a UTF-8 reply
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}  # e.g. Retry-After on a 429

    @property
    def kind(self) -> str:
        return TYPES.get(self.status, "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "code": self.status}}
