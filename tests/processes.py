"""Watching processes from tests: children of a process, and waiting for one to end."""

from __future__ import annotations

import os
import select
from pathlib import Path


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found |= {int(child) for child in text}
    return found


def wait_gone(pid: int, timeout: float = 60) -> None:
    """Block until process ``pid`` has exited (a pidfd becomes readable), not by polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"process {pid} still alive after {timeout}s"
    finally:
        os.close(fd)
