"""Registry authentication: Ollama's ed25519-signed token requests, and stored credentials.

On a 401 the registry names a scheme:

- ``Bearer realm=…`` → a token from the realm, which must be on the registry's own host. With
  stored credentials for the host, the token request carries them as Basic auth (the Docker token
  protocol); without, it carries the signature of ``GET,<token URL>,<b64 hex sha256("")>`` by the
  daemon's ed25519 key, exactly as Ollama does, so ollama.com knows the key's owner. A stored
  ``registrytoken`` is sent as the bearer token itself.
- ``Basic`` → the stored username and password.

Credentials come from ``credentials.json`` beside the store (``~/.ollama`` or ``/var/lib/ollama``),
then Docker's ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``) of the daemon's
user, both in Docker's format::

    {"auths": {"registry.example.com:5000": {"auth": "<base64 user:password>"},
               "other.example.com": {"username": "u", "password": "p"},
               "tokens.example.com": {"registrytoken": "<bearer token>"}}}

Credential helpers (``credsStore``) are not run: the daemon executes nothing a config names.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from ollamad.identity import Identity
from ollamad.registry import protocol
from ollamad.registry.client import describe, read_limited
from ollamad.registry.errors import RegistryError, Unauthorized

log = logging.getLogger(__name__)

MAX_CREDENTIALS_BYTES = 1 << 20
MAX_TOKEN_RESPONSE = 1 << 20


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    token: str = ""

    @property
    def basic(self) -> str | None:
        if not self.username:
            return None
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def _entry(value: Any) -> Credentials | None:
    if not isinstance(value, dict):
        return None
    token = value.get("registrytoken")
    if isinstance(token, str) and token:
        return Credentials(token=token)
    username, password = value.get("username"), value.get("password")
    if isinstance(username, str) and username and isinstance(password, str):
        return Credentials(username, password)
    encoded = value.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            user, sep, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if sep and user:
            return Credentials(user, secret)
    return None


def _key(server: str) -> str:
    """Docker writes ``https://host/v1/`` as often as ``host``: compare the host[:port] only."""
    text = server.strip()
    if "://" not in text:
        text = "//" + text
    return urlsplit(text).netloc.rpartition("@")[2].lower()


def parse_auths(obj: Any) -> dict[str, Credentials]:
    """Docker's ``{"auths": {server: entry}}`` → credentials by host[:port]."""
    found: dict[str, Credentials] = {}
    auths = obj.get("auths") if isinstance(obj, dict) else None
    if isinstance(auths, dict):
        for server, value in auths.items():
            credentials = _entry(value)
            if isinstance(server, str) and credentials is not None:
                found.setdefault(_key(server), credentials)
    return found


def credential_files(identity_dir: Path, env: Mapping[str, str]) -> list[Path]:
    docker = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else \
        Path(env.get("HOME") or "~").expanduser() / ".docker"
    return [identity_dir / "credentials.json", docker / "config.json"]


def load_credentials(files: list[Path], host: str) -> Credentials | None:
    """The first credentials any file holds for ``host`` (host[:port])."""
    for path in files:
        try:
            with open(path, "rb") as handle:
                obj = json.loads(handle.read(MAX_CREDENTIALS_BYTES))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            log.warning("ignoring credentials file %s: %s", path, exc)
            continue
        if (found := parse_auths(obj).get(host.lower())) is not None:
            return found
    return None


class Authenticator:
    """The Authorization header for one registry, renewed when the registry challenges it.

    Shared by the requests of one operation (and the downloads it starts), so one token serves
    them all, as Ollama keeps one per request.
    """

    def __init__(self, registry: str, identity: Callable[[], Identity],
                 credentials: Credentials | None) -> None:
        self.registry = registry
        self._identity = identity
        self._credentials = credentials
        self.header: str | None = None

    def headers_for(self, url: str) -> dict[str, str]:
        """Authorization for ``url``, only if it is on the registry's host: a CDN it redirects
        to gets no credentials."""
        if self.header and protocol.same_host(url, self.registry):
            return {"Authorization": self.header}
        return {}

    async def answer(self, http: httpx.AsyncClient, response: httpx.Response) -> None:
        """Set a new header for the challenge in a 401 ``response``; Unauthorized if we cannot."""
        challenge = protocol.parse_challenge(response.headers.get("www-authenticate"))
        credentials = self._credentials
        if challenge is not None and challenge.scheme == "basic":
            if credentials is None or credentials.basic is None:
                raise Unauthorized()
            self.header = credentials.basic
        elif challenge is not None and challenge.scheme == "bearer" and challenge.realm:
            if credentials is not None and credentials.token:
                self.header = f"Bearer {credentials.token}"
            else:
                self.header = "Bearer " + await self._token(http, challenge)
        else:
            raise Unauthorized()

    async def _token(self, http: httpx.AsyncClient, challenge: protocol.Challenge) -> str:
        url = protocol.token_url(challenge, int(time.time()))
        protocol.check_realm(url, self.registry)
        basic = self._credentials.basic if self._credentials is not None else None
        if basic is not None:
            authorization = basic
        else:
            authorization = self._identity().sign(protocol.signing_payload("GET", url))
        try:
            async with http.stream("GET", url, headers={"Authorization": authorization}) as reply:
                body = await read_limited(reply, MAX_TOKEN_RESPONSE)
        except httpx.HTTPError as exc:
            raise RegistryError(f"token request to {protocol.host_port(url)} failed: "
                                f"{describe(exc)}") from None
        if reply.status_code >= 400:
            detail = body.decode(errors="replace").strip()
            raise Unauthorized(f"{reply.status_code}: {detail}" if detail
                               else str(reply.status_code))
        token = None
        with contextlib.suppress(ValueError):
            obj = json.loads(body)
            if isinstance(obj, dict):
                token = obj.get("token") or obj.get("access_token")
        if not isinstance(token, str) or not token or not token.isprintable():
            raise Unauthorized("the token server answered without a token")
        return token
