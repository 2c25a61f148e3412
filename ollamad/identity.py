"""The daemon's ed25519 identity: ``id_ed25519`` / ``id_ed25519.pub`` in OpenSSH format.

Registries that speak Ollama's auth know a user by this public key, so the private key is made
once and never replaced: losing it means registering a new key.
"""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)

PRIVATE_NAME = "id_ed25519"
PUBLIC_NAME = "id_ed25519.pub"


@dataclass(frozen=True)
class Identity:
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> str:
        """The authorized_keys line, ``ssh-ed25519 <base64>``."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()

    def sign(self, data: bytes) -> str:
        """Ollama's signature header value: ``<public key>:<signature>``.

        The public key is the base64 SSH wire blob (the second field of the .pub line) and the
        signature the base64 of the raw 64-byte ed25519 signature, which is what registries
        that know Ollama's keys verify.
        """
        signature = base64.b64encode(self.private_key.sign(data)).decode()
        return f"{self.public_key.split()[1]}:{signature}"


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Create ``path`` with ``data`` unless it exists; True if this call created it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def load_or_create(folder: Path) -> Identity:
    """Load the key pair from ``folder``, creating it on first use; an existing key is kept."""
    private_path, public_path = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    if not private_path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
        if _write_new(private_path, pem, 0o600):
            log.info("Couldn't find '%s'. Generated a new private key.", private_path)
    loaded = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{private_path} is not an ed25519 key")
    identity = Identity(loaded)
    if _write_new(public_path, (identity.public_key + "\n").encode(), 0o644):
        log.info("Your new public key is: %s", identity.public_key)
    return identity
