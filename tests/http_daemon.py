"""A real daemon with its HTTP bridge on a loopback port the kernel picks (no port races)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.daemon import Daemon, running_daemon

MODEL = "smollm2:135m"


def http_url(daemon: Daemon) -> str:
    """The bridge's address, from the STATUS line that came with READY=1."""
    for line in daemon.notify.received:
        if match := re.search(r"HTTP on (http://\S+)", line):
            return match.group(1)
    raise AssertionError(f"no HTTP address in {daemon.notify.received}")


@contextlib.contextmanager
def http_daemon(home: Path, extra_args: Sequence[str] = (),
                env: dict[str, str] | None = None) -> Iterator[tuple[Daemon, str]]:
    with running_daemon(home, ["--http", "127.0.0.1:0", *extra_args], env) as daemon:
        yield daemon, http_url(daemon)
