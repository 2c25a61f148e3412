"""The bridge's settings from the environment: CORS origins, API keys, size limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ollamad.config import env_value

# Request bodies are JSON except blob uploads, which stream to disk and have no limit. Generous:
# a chat with a few base64 images is tens of megabytes.
MAX_JSON_BODY = 64 * 1024 * 1024
# Request line plus headers; Hypercorn answers 400 beyond it.
MAX_HEADER_BYTES = 64 * 1024


def default_origins() -> list[str]:
    """The origins Ollama always allows, after any from ``OLLAMA_ORIGINS``."""
    origins = []
    for host in ("localhost", "127.0.0.1", "0.0.0.0"):
        origins += [f"http://{host}", f"https://{host}", f"http://{host}:*",
                    f"https://{host}:*"]
    return [*origins, "app://*", "file://*", "tauri://*", "vscode-webview://*",
            "vscode-file://*"]


def allowed_origins(env: Mapping[str, str]) -> list[str]:
    configured = env_value(env, "OLLAMA_ORIGINS")
    return (configured.split(",") if configured else []) + default_origins()


def load_api_keys(path: Path) -> frozenset[str]:
    """One key per line; blank lines and ``#`` comments are ignored. OSError if unreadable."""
    keys = set()
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.add(line)
    return frozenset(keys)


@dataclass(frozen=True)
class HTTPSettings:
    origins: tuple[str, ...]
    # None: no keys are asked for. A configured but empty set refuses everyone, which is safer
    # than silently serving without keys.
    api_keys: frozenset[str] | None = None
    max_body: int = MAX_JSON_BODY
    max_header: int = MAX_HEADER_BYTES
    shutdown_timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], shutdown_timeout: float = 30.0) -> HTTPSettings:
        """Raises ValueError if ``OLLAMAD_API_KEYS_FILE`` names a file that cannot be read."""
        keys = None
        if key_file := env_value(env, "OLLAMAD_API_KEYS_FILE"):
            try:
                keys = load_api_keys(Path(key_file).expanduser())
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read the API keys in {key_file}: {exc}") from None
        return cls(tuple(allowed_origins(env)), keys, shutdown_timeout=shutdown_timeout)
