"""Settings from the environment (Ollama's OLLAMA_* names) and the paths derived from them."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ollamad.durations import parse_duration
from ollamad.protocol import DEFAULT_MAX_FRAME_SIZE

SOCKET_NAME = "ollamad.sock"


def env_value(env: Mapping[str, str], key: str) -> str:
    """A variable trimmed of spaces and surrounding quotes, as Ollama reads them."""
    return env.get(key, "").strip().strip("\"'").strip()


def env_bool(env: Mapping[str, str], key: str) -> bool:
    """Go's ParseBool, where an unparsable non-empty value counts as true (Ollama's rule)."""
    value = env_value(env, key)
    if not value:
        return False
    return value not in ("0", "f", "F", "false", "FALSE", "False")


def home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or os.path.expanduser("~"))


def models_dir(env: Mapping[str, str]) -> Path:
    """``$OLLAMA_MODELS``; else the system service's state directory; else ``~/.ollama/models``."""
    if explicit := env_value(env, "OLLAMA_MODELS"):
        return Path(explicit).expanduser()
    # systemd sets STATE_DIRECTORY for a unit with StateDirectory=ollama (/var/lib/ollama).
    if state := env_value(env, "STATE_DIRECTORY"):
        return Path(state.split(":")[0]) / "models"
    return home(env) / ".ollama" / "models"


def socket_candidates(env: Mapping[str, str]) -> list[Path]:
    """Where a daemon listens, most specific first: the bind default is the first entry."""
    if explicit := env_value(env, "OLLAMAD_SOCKET"):
        return [Path(explicit).expanduser()]
    found = []
    # RuntimeDirectory=ollamad in the system unit makes this /run/ollamad.
    if runtime := env_value(env, "RUNTIME_DIRECTORY"):
        found.append(Path(runtime.split(":")[0]) / SOCKET_NAME)
    if xdg := env_value(env, "XDG_RUNTIME_DIR"):
        found.append(Path(xdg) / SOCKET_NAME)
    found.append(home(env) / ".ollama" / SOCKET_NAME)
    found.append(Path("/run/ollamad") / SOCKET_NAME)
    return found


def env_int(env: Mapping[str, str], key: str, default: int) -> int:
    value = env_value(env, key)
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"{key}={value!r} is not a whole number") from None


def env_duration(env: Mapping[str, str], key: str, default: float) -> float:
    """Seconds; negative means forever (keep_alive's rule)."""
    value = env_value(env, key)
    if not value:
        return default
    seconds = parse_duration(value)
    return math.inf if seconds < 0 else seconds


@dataclass(frozen=True)
class Settings:
    models: Path
    debug: bool = False
    noprune: bool = False
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    keep_alive: float = 300.0
    max_loaded_models: int = 3
    max_queue: int = 512
    num_parallel: int = 0  # 0: automatic, see Inference.load_options
    context_length: int = 4096
    # None: llama.cpp decides, which means on for the CPU (see ollamad.runner.llama).
    flash_attention: bool | None = None

    @property
    def identity_dir(self) -> Path:
        """The keys live beside the store: ``~/.ollama`` or ``/var/lib/ollama``."""
        return self.models.parent

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        return cls(
            models=models_dir(env),
            debug=env_bool(env, "OLLAMA_DEBUG"),
            noprune=env_bool(env, "OLLAMA_NOPRUNE"),
            keep_alive=env_duration(env, "OLLAMA_KEEP_ALIVE", 300.0),
            # 0 means "automatic" to Ollama: three per GPU, and three on a CPU.
            max_loaded_models=env_int(env, "OLLAMA_MAX_LOADED_MODELS", 0) or 3,
            max_queue=env_int(env, "OLLAMA_MAX_QUEUE", 512),
            num_parallel=env_int(env, "OLLAMA_NUM_PARALLEL", 0),
            context_length=env_int(env, "OLLAMA_CONTEXT_LENGTH", 0) or 4096,
            flash_attention=(env_bool(env, "OLLAMA_FLASH_ATTENTION")
                             if env_value(env, "OLLAMA_FLASH_ATTENTION") else None),
        )
