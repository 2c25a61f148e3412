"""OCI distribution client: pull, push, Ollama's ed25519 registry auth, OCI-layout archives.

Imported only by the operations that need it: httpx is not loaded for a daemon that never pulls.
Pure parts (no I/O): :mod:`.protocol` (URLs, challenges, ranges), :mod:`.parts` (part plan and
resume state), :mod:`.settings`; the trio/httpx shell: :mod:`.client`, :mod:`.auth`,
:mod:`.download`, :mod:`.upload`; the operations: :mod:`.pull`, :mod:`.push`, :mod:`.archive`.
Errors: :mod:`.errors`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ollamad import identity
from ollamad.registry.archive import export, import_archive
from ollamad.registry.auth import credential_files
from ollamad.registry.pull import Registry, pull
from ollamad.registry.push import push
from ollamad.registry.settings import TransferSettings
from ollamad.store import ModelStore


def for_store(store: ModelStore, env: Mapping[str, str] = os.environ) -> Registry:
    """Registry access for a daemon serving ``store``: the identity and ``credentials.json``
    beside the store, settings from the environment (read per operation, so no restart is
    needed after a change)."""
    folder: Path = store.root.parent
    return Registry(TransferSettings.from_env(env), lambda: identity.load_or_create(folder),
                    credential_files(folder, env))


__all__ = ["Registry", "TransferSettings", "export", "for_store", "import_archive", "pull",
           "push"]
