"""The OCI distribution protocol as Ollama speaks it, without I/O: URLs, challenges, ranges.

Everything here is a pure function of its arguments, so the hostile cases (odd headers, foreign
hosts, broken ranges) are tested without a network.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote_plus, urljoin, urlsplit, urlunsplit

from ollamad.errors import BadRequest
from ollamad.registry.errors import InsecureProtocol, RegistryRefused, Unauthorized
from ollamad.store import Digest, ModelName

# Ollama asks for the Docker type only; OCI registries that store OCI manifests answer those.
MANIFEST_ACCEPT = ("application/vnd.docker.distribution.manifest.v2+json, "
                   "application/vnd.oci.image.manifest.v1+json")
MAX_REDIRECTS = 10
_DEFAULT_PORT = {"http": 80, "https": 443}


def base_url(name: ModelName, insecure: bool) -> str:
    """``<scheme>://<host>``: https unless ``insecure``; an http:// name needs ``insecure``."""
    if name.scheme == "http" and not insecure:
        raise InsecureProtocol()
    url = f"{'http' if insecure else 'https'}://{name.host}"
    try:
        # The name grammar lets a host hold any colons; only one port of digits makes a URL.
        _ = urlsplit(url).port
    except ValueError:
        raise BadRequest(f'invalid registry host "{name.host}"') from None
    return url


def manifest_url(base: str, name: ModelName) -> str:
    return f"{base}/v2/{name.repository}/manifests/{name.tag}"


def blob_url(base: str, name: ModelName, digest: Digest) -> str:
    return f"{base}/v2/{name.repository}/blobs/{digest}"


def upload_url(base: str, name: ModelName, mount: Digest | None = None,
               source: ModelName | None = None) -> str:
    """Where a blob upload starts; with ``mount``/``source``, a cross-repository mount."""
    url = f"{base}/v2/{name.repository}/blobs/uploads/"
    if mount is not None and source is not None:
        url += "?" + go_query([("from", source.repository), ("mount", str(mount))])
    return url


def with_query(url: str, pairs: list[tuple[str, str]]) -> str:
    """``url`` with ``pairs`` added to its query, all keys sorted as Go's url.Values encodes."""
    parts = urlsplit(url)
    existing = parse_qsl(parts.query, keep_blank_values=True)
    return urlunsplit(parts._replace(query=go_query(existing + pairs)))


def go_query(pairs: list[tuple[str, str]]) -> str:
    """Go's ``url.Values.Encode``: keys sorted (stable within a key), QueryEscape'd values."""
    ordered = sorted(pairs, key=lambda pair: pair[0])
    return "&".join(f"{quote_plus(k, safe='')}={quote_plus(v, safe='')}" for k, v in ordered)


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with the default port filled in: what "the same host" compares."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORT.get(scheme, 0)


def same_host(a: str, b: str) -> bool:
    """Whether two URLs name the same host and port (a scheme change does not matter)."""
    return origin(a)[1:] == origin(b)[1:]


def host_port(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2]


def resolve_location(request_url: str, location: str | None) -> str:
    """A Location header (absolute or relative) as an absolute http(s) URL."""
    if not location:
        raise RegistryRefused(f"registry redirected from {request_url} without a Location")
    try:
        url = urljoin(request_url, location.strip())
        parts = urlsplit(url)
        _ = parts.port  # a port that is no number in range raises here, not later on
    except ValueError:
        raise RegistryRefused(f"registry redirected to a malformed URL: {location!r}") from None
    if parts.scheme not in ("http", "https"):
        raise RegistryRefused(f"registry redirected to a non-http URL: {location!r}")
    return url


# -- auth challenges ----------------------------------------------------------------------------

_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_.-]*)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]*)\s*,?')


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str  # "bearer" or "basic", lower-cased
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scope(self) -> str:
        return self.params.get("scope", "")


def parse_challenge(header: str | None) -> Challenge | None:
    """``Bearer realm="…",service="…",scope="…"`` (or Basic) → Challenge; None if unreadable."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            break
        value = match.group(3) if match.group(3) is not None else match.group(2)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = match.end()
    return Challenge(scheme.lower(), params)


def token_url(challenge: Challenge, now: int, nonce: str | None = None) -> str:
    """The token request Ollama makes: the realm plus service, each scope, ts and nonce."""
    pairs = [("service", challenge.service)]
    # Go's strings.Split: an empty scope still yields one empty ``scope=``.
    pairs += [("scope", scope) for scope in challenge.scope.split(" ")]
    pairs += [("ts", str(now)), ("nonce", nonce if nonce is not None else new_nonce())]
    try:
        return with_query(challenge.realm, pairs)
    except ValueError:
        raise Unauthorized(f"the registry's token realm {challenge.realm!r} is not a valid "
                           "URL") from None


def new_nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


def signing_payload(method: str, url: str, body: bytes = b"") -> bytes:
    """What Ollama signs for a token: ``METHOD,URL,base64(hex(sha256(body)))``."""
    body_hash = hashlib.sha256(body).hexdigest().encode()
    return f"{method},{url},{base64.b64encode(body_hash).decode()}".encode()


def check_realm(realm_url: str, registry_url: str) -> None:
    """A token realm must live on the registry's own host: our signature or credentials go
    there, and a registry must not be able to send them anywhere else."""
    try:
        same = same_host(realm_url, registry_url)
    except ValueError:  # the registry's own URL passed the name grammar: the realm is at fault
        raise Unauthorized(f"the registry's token realm {realm_url!r} is not a valid URL"
                           ) from None
    if not same:
        raise Unauthorized(f'realm host "{host_port(realm_url)}" does not match original host '
                           f'"{host_port(registry_url)}"')


# -- ranges -------------------------------------------------------------------------------------

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def check_range_response(status: int, content_range: str | None, start: int, end: int,
                         total: int) -> None:
    """Accept an answer to ``Range: bytes=start-end`` (inclusive) of a ``total``-byte blob.

    A 200 is the whole blob, acceptable only when the whole blob was asked for; a 206 must start
    where we asked, end within what we asked, and agree on the total.
    """
    if status == 200:
        if start == 0 and end == total - 1:
            return
        raise RegistryRefused("registry ignored the Range header of a partial download")
    if status != 206:
        raise RegistryRefused(f"unexpected status code {status}")
    match = _CONTENT_RANGE.fullmatch((content_range or "").strip())
    if match is None:
        raise RegistryRefused(f"registry answered a range with Content-Range {content_range!r}")
    first, last, size = int(match.group(1)), int(match.group(2)), match.group(3)
    if first != start or not first <= last <= end or (size != "*" and int(size) != total):
        raise RegistryRefused(f"registry sent bytes {first}-{last}/{size} for "
                              f"bytes {start}-{end}/{total}")
