"""Failures as OpenAI's clients expect them: `{"error": {"message", "type", "code", "param"}}`,
with Parley's own code and the reference its log line carries (`parley_code`, `reference`).

The HTTP status follows the failure: 401 a missing or unknown key, 403 a scope or act not
allowed, 404 no such model, file or route, 413 a body past `http_api.max_body_mb`, 400 a request
that cannot be served as sent (past the context window, a bad field), 422 a file Parley cannot
read, 429 a rate limit or the key's cap on requests in flight (with Retry-After), 503 while the
model loads, memory is short, the queue is full or Parley restarts (with Retry-After).
"""
from __future__ import annotations

import json
import re

from aiohttp import web

from engine.errors import ErrorCode, ParleyError, new_reference
from engine.types import AnswerFailed

STATUS: dict[ErrorCode, int] = {
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.MODEL_UNKNOWN: 404,
    ErrorCode.DOCUMENT_NOT_FOUND: 404,
    ErrorCode.FILE_TOO_LARGE: 413,
    ErrorCode.CONTEXT_TOO_LONG: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.QUEUE_FULL: 503,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.MODEL_NOT_READY: 503,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.MODEL_FAULT: 503,
    ErrorCode.UNSUPPORTED_FILE: 422,
    ErrorCode.FILE_EMPTY: 422,
    ErrorCode.FILE_UNREADABLE: 422,
    ErrorCode.FILE_ENCRYPTED: 422,
    ErrorCode.FILE_NO_TEXT: 422,
    ErrorCode.FILE_BAD_ENCODING: 422,
    ErrorCode.FILE_TOO_COMPLEX: 422,
}
TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 413: "invalid_request_error", 422: "invalid_request_error",
         429: "rate_limit_error", 503: "server_error"}
OPENAI_CODES = {ErrorCode.CONTEXT_TOO_LONG: "context_length_exceeded", ErrorCode.MODEL_UNKNOWN: "model_not_found",
                ErrorCode.RATE_LIMITED: "rate_limit_exceeded", ErrorCode.FORBIDDEN: "forbidden"}
UNAVAILABLE_RETRY_S = 5
_WAIT = re.compile(r"Try again in (\d+) (s|min)")


class ApiError(Exception):
    """A refusal made by the HTTP layer itself (a key, a route, the request's shape)."""

    def __init__(self, status: int, message: str, *, code: str, parley_code: str, param: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.parley_code = parley_code
        self.param = param
        self.retry_after = retry_after
        self.reference = new_reference()


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_api_key", parley_code="UNAUTHORIZED")


def forbidden(message: str, param: str | None = None) -> ApiError:
    """A scope the key was not given (the HTTP layer's own check: logged here, not by the Engine)."""
    return ApiError(403, message, code="forbidden", parley_code=ErrorCode.FORBIDDEN.value, param=param)


def not_found(message: str) -> ApiError:
    return ApiError(404, message, code="not_found", parley_code=ErrorCode.DOCUMENT_NOT_FOUND.value)


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, code="invalid_request", parley_code=ErrorCode.INVALID_REQUEST.value, param=param)


def retry_after(code: ErrorCode, message: str) -> int | None:
    """Seconds to wait, for the Retry-After header: from the limit's own words when rate-limited."""
    if code is ErrorCode.RATE_LIMITED:
        found = _WAIT.search(message)
        if found is None:
            return 60
        return int(found.group(1)) * (60 if found.group(2) == "min" else 1)
    if STATUS.get(code) == 503:
        return UNAVAILABLE_RETRY_S
    return None


def body(message: str, kind: str, code: str, parley_code: str, reference: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "code": code, "param": param,
                      "parley_code": parley_code, "reference": reference}}


def _response(status: int, payload: dict, wait: int | None) -> web.Response:
    headers = {"Retry-After": str(wait)} if wait is not None else None
    return web.Response(status=status, text=json.dumps(payload), content_type="application/json", headers=headers)


def failure_response(failed: AnswerFailed | ParleyError) -> web.Response:
    """A failure the Engine reported (counted and logged there), as an HTTP response."""
    message = failed.message if isinstance(failed, AnswerFailed) else failed.user_message
    return _response(STATUS.get(failed.code, 500), failure_body(failed), retry_after(failed.code, message))


def failure_body(failed: AnswerFailed | ParleyError) -> dict:
    """The error object of a failure the Engine reported (also an error event of a stream)."""
    code = failed.code
    message = failed.message if isinstance(failed, AnswerFailed) else failed.user_message
    kind = TYPES.get(STATUS.get(code, 500), "server_error")
    return body(message, kind, OPENAI_CODES.get(code, code.value.lower()), code.value, failed.reference)


def api_error_response(error: ApiError) -> web.Response:
    payload = body(error.message, TYPES.get(error.status, "server_error"), error.code, error.parley_code,
                   error.reference, error.param)
    return _response(error.status, payload, error.retry_after)
