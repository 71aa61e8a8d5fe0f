"""Error codes: every failure a user can meet becomes one of these.

A ParleyError carries a code, a one-line message fit to show in a chat thread, and a short
reference id that is also written to the log, so an admin can find the traceback.
"""
from __future__ import annotations

import enum
import functools
import secrets


class ErrorCode(str, enum.Enum):
    MODEL_NOT_READY = "MODEL_NOT_READY"
    MODEL_UNKNOWN = "MODEL_UNKNOWN"
    MODEL_LOAD_FAILED = "MODEL_LOAD_FAILED"
    CONTEXT_TOO_LONG = "CONTEXT_TOO_LONG"
    GENERATION_FAILED = "GENERATION_FAILED"
    MODEL_FAULT = "MODEL_FAULT"
    CANCELLED = "CANCELLED"
    QUEUE_FULL = "QUEUE_FULL"
    OVERLOADED = "OVERLOADED"
    RATE_LIMITED = "RATE_LIMITED"
    FORBIDDEN = "FORBIDDEN"
    UNSUPPORTED_FILE = "UNSUPPORTED_FILE"
    FILE_TOO_LARGE = "FILE_TOO_LARGE"
    FILE_EMPTY = "FILE_EMPTY"
    FILE_UNREADABLE = "FILE_UNREADABLE"
    FILE_ENCRYPTED = "FILE_ENCRYPTED"
    FILE_NO_TEXT = "FILE_NO_TEXT"
    FILE_BAD_ENCODING = "FILE_BAD_ENCODING"
    FILE_TOO_COMPLEX = "FILE_TOO_COMPLEX"  # past a reading limit: memory, time, nesting, a zip bomb
    DOCUMENT_NOT_FOUND = "DOCUMENT_NOT_FOUND"
    INVALID_REQUEST = "INVALID_REQUEST"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    INTERNAL = "INTERNAL"


# What a user reads when a failure carries no more specific message.
DEFAULT_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.MODEL_NOT_READY: "The model is still loading. Try again in a moment.",
    ErrorCode.MODEL_UNKNOWN: "There is no model by that name.",
    ErrorCode.MODEL_LOAD_FAILED: "The model could not be loaded.",
    ErrorCode.CONTEXT_TOO_LONG: "That message is too long for the model's context window. Please shorten it.",
    ErrorCode.GENERATION_FAILED: "Something went wrong while writing the answer.",
    ErrorCode.MODEL_FAULT: "The model's device failed; I'm restarting it. Please ask again in a minute.",
    ErrorCode.CANCELLED: "The answer was cancelled.",
    ErrorCode.QUEUE_FULL: "I'm answering too many questions right now. Please try again in a minute.",
    ErrorCode.OVERLOADED: "The server is short of memory right now. Please try again shortly.",
    ErrorCode.RATE_LIMITED: "You're sending requests too fast.",
    ErrorCode.FORBIDDEN: "Only admins can do that.",
    ErrorCode.UNSUPPORTED_FILE: "That file type is not supported.",
    ErrorCode.FILE_TOO_LARGE: "That file is too large.",
    ErrorCode.FILE_EMPTY: "That file is empty.",
    ErrorCode.FILE_UNREADABLE: "That file could not be read; it may be corrupt.",
    ErrorCode.FILE_ENCRYPTED: "That PDF is encrypted; please share an unencrypted copy.",
    ErrorCode.FILE_NO_TEXT: "That file has no text I could read, not even by OCR.",
    ErrorCode.FILE_BAD_ENCODING: "That text file is not UTF-8.",
    ErrorCode.FILE_TOO_COMPLEX: "That file takes more memory or time to read than I allow; "
                                "save it as a simpler or smaller file and share it again.",
    ErrorCode.DOCUMENT_NOT_FOUND: "There is no document by that name here.",
    ErrorCode.INVALID_REQUEST: "That request is not valid.",
    ErrorCode.SHUTTING_DOWN: "I'm restarting; please ask again in a minute.",
    ErrorCode.INTERNAL: "Something went wrong on my side.",
}


def new_reference() -> str:
    """A short id shown to the user and written to the log beside the traceback."""
    return secrets.token_hex(4)


class ParleyError(Exception):
    """A failure with a code and a message a chat user can read."""

    def __init__(self, code: ErrorCode, message: str | None = None, *, reference: str | None = None,
                 silent: bool = False, detail: str = ""):
        self.code = code
        self.user_message = message or DEFAULT_MESSAGES[code]
        self.reference = reference or new_reference()
        # A repeat refusal inside a rate-limit cool-down: adapters show nothing (no reply spam).
        self.silent = silent
        self.detail = detail  # for the log line only (e.g. a remote server's status), never the user
        super().__init__(f"{code.value}: {self.user_message}")

    def render(self) -> str:
        """The reply shown in the thread."""
        return f"{self.user_message} ({self.code.value}, ref {self.reference})"


def file_too_large(name: str, size: int, limit_mb: float) -> ParleyError:
    """FILE_TOO_LARGE, saying by how much (`size` in bytes)."""
    return ParleyError(ErrorCode.FILE_TOO_LARGE, f"{name} is {size / 2**20:.1f} MB; the limit is {limit_mb:g} MB.")


def reported(action: str):
    """Every failure of a command reaches the caller as a ParleyError, counted and logged once
    with the reference the user sees; an unexpected exception becomes INTERNAL."""

    def wrap(method):
        @functools.wraps(method)
        async def run(self, *args, **kwargs):
            try:
                return await method(self, *args, **kwargs)
            except ParleyError as exc:
                self.failure(exc, action=action, args=args)
                raise
            except Exception as exc:  # noqa: BLE001
                error = ParleyError(ErrorCode.INTERNAL)
                self.failure(error, cause=exc, action=action, args=args)
                raise error from exc

        return run

    return wrap
