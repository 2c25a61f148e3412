"""The daemon's exception tree, and the one place that maps failures to protocol error codes.

Every operation raises a subclass of :class:`OllamadError`; its ``code`` is the stable string that
crosses the wire (see ``ollamad.protocol.ErrorCode``) and its message is what a person reads.
Anything else that escapes an operation is turned into a code by :func:`classify`.
"""

from __future__ import annotations

import errno

from ollamad.protocol import ErrorCode


class OllamadError(Exception):
    """Base of every error an operation reports to its caller."""

    code: str = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(OllamadError):
    """The caller sent something malformed or invalid."""

    code = ErrorCode.BAD_REQUEST


class InvalidName(BadRequest):
    """A model name that does not match the name grammar."""

    def __init__(self, message: str = "invalid model name") -> None:
        super().__init__(message)


class InvalidDigest(BadRequest):
    """A digest that does not match ``sha256[:-]<64 hex>``."""

    def __init__(self, message: str = "invalid digest format") -> None:
        super().__init__(message)


class NotFound(OllamadError):
    """The model, blob or request the caller named does not exist."""

    code = ErrorCode.NOT_FOUND


class Busy(OllamadError):
    """The daemon is at a limit (queue length, loaded models) and refuses more work for now."""

    code = ErrorCode.BUSY


class Unavailable(OllamadError):
    """The daemon is shutting down, or a part it needs is not available."""

    code = ErrorCode.UNAVAILABLE


class NoSpace(OllamadError):
    """The store's file system is full; nothing was written."""

    code = ErrorCode.NO_SPACE


class CorruptStore(OllamadError):
    """A file in the store does not match what a manifest or its name promises."""

    code = ErrorCode.INTERNAL


class DigestMismatch(BadRequest):
    """Data whose sha256 is not the digest it was sent under."""


def classify(exc: BaseException) -> tuple[str, str]:
    """Map any exception escaping an operation to a protocol ``(code, message)`` pair."""
    if isinstance(exc, OllamadError):
        return exc.code, exc.message
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return ErrorCode.NO_SPACE, f"no space left on the model store: {exc.strerror}"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return ErrorCode.INTERNAL, f"the daemon cannot write its store: {exc}"
        return ErrorCode.INTERNAL, f"i/o error: {exc}"
    return ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
