"""Logging: stderr always (journald reads it); a rotated file too when systemd is not around."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from collections.abc import Mapping
from pathlib import Path


def under_systemd(env: Mapping[str, str]) -> bool:
    # JOURNAL_STREAM is set when stderr is connected to the journal.
    return bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))


def setup(debug: bool, log_dir: Path, env: Mapping[str, str] = os.environ) -> None:
    journal = under_systemd(env)
    # journald adds its own timestamps.
    fmt = "%(levelname)s %(name)s: %(message)s" if journal else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if not journal:
        try:
            log_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            handlers.append(logging.handlers.RotatingFileHandler(
                log_dir / "server.log", maxBytes=10 * 1024 * 1024, backupCount=3))
        except OSError as exc:
            print(f"ollamad: not logging to {log_dir}: {exc}", file=sys.stderr)
    formatter = logging.Formatter(fmt)
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=handlers,
                        force=True)
