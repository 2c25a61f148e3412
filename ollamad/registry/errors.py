"""What can go wrong talking to a registry or reading an archive: one tree under OllamadError.

    OllamadError
    ├── RegistryError (code ``unavailable``)   the registry failed us or broke the protocol
    │   ├── ManifestNotFound (``not_found``)   no such model or tag on the registry
    │   ├── Unauthorized                        no credentials it accepts; a foreign token realm
    │   ├── RegistryRefused                     a manifest or response we will not act on
    │   ├── CorruptBlob                         a downloaded blob that is not its digest
    │   └── TransferFailed                      retries exhausted (errors, stalls, truncations)
    └── BadRequest
        ├── InsecureProtocol                    an http:// name without ``insecure``
        └── ArchiveRefused                      an import archive that fails a check

Messages follow Ollama's where Ollama has one, since users and scripts match on them (the CLI
keys its "model not found" advice off ``pull model manifest: file does not exist``).
"""

from __future__ import annotations

from ollamad.errors import BadRequest, OllamadError
from ollamad.protocol import ErrorCode


class RegistryError(OllamadError):
    """The registry failed, refused, or sent something we will not act on."""

    code = ErrorCode.UNAVAILABLE


class ManifestNotFound(RegistryError):
    code = ErrorCode.NOT_FOUND


class Unauthorized(RegistryError):
    def __init__(self, message: str = "unauthorized: access denied") -> None:
        super().__init__(message)


class RegistryRefused(RegistryError):
    """A hostile or broken answer: malformed manifest, foreign range, impossible size."""


class CorruptBlob(RegistryError):
    """Bytes whose sha256 is not the digest they were fetched as; they have been deleted."""


class TransferFailed(RegistryError):
    """A part failed more often than the retry budget allows."""


class InsecureProtocol(BadRequest):
    def __init__(self) -> None:
        super().__init__("insecure protocol http")


class ArchiveRefused(BadRequest):
    """An import archive with a link, a traversing or repeated entry, or a wrong digest."""
