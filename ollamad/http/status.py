"""The one place that maps failures to HTTP statuses (``ollamad.errors.classify`` maps them to
protocol codes; this maps those codes on, as Ollama's handlers choose their statuses)."""

from __future__ import annotations

import logging

from ollamad.errors import classify
from ollamad.protocol import ErrorCode

log = logging.getLogger(__name__)

# Ollama has no "disk full" status: its handlers answer 500 for any I/O failure.
_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.PROTOCOL: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CANCELLED: 499,
    ErrorCode.BUSY: 503,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.NO_SPACE: 500,
    ErrorCode.INTERNAL: 500,
}


class HTTPProblem(Exception):
    """A failure the bridge finds itself (a body it cannot decode), with its status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def status_of(exc: BaseException, what: str = "request") -> tuple[int, str]:
    """The status and message for a failure; unexpected ones are logged with their traceback."""
    if isinstance(exc, HTTPProblem):
        return exc.status, exc.message
    code, message = classify(exc)
    if code == ErrorCode.INTERNAL:
        log.error("%s failed", what, exc_info=exc)
    return _STATUS.get(code, 500), message
