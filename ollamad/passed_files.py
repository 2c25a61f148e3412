"""Files that clients pass over the socket, read and written from worker threads.

A client may pass a pipe and then never write to it, never close it, or (for an export) never
read from it. A plain ``read`` or ``write`` would then hold its worker thread for good, and
enough such requests would take every thread the daemon has. Here a wait on anything but a
regular file is a ``poll`` bounded in time, and between two polls ``check`` runs: it raises
once the request is cancelled (its client gone), so the thread is let go within a moment.
"""

from __future__ import annotations

import io
import os
import select
import stat
from collections.abc import Callable, Iterator

# How often a waiting thread looks at whether its request is still wanted.
CHECK_EVERY_MS = 250
# A pipe that polls writable has a free page at least: a write of this size never blocks.
# A Unix or TCP socket that polls writable has more room than this too.
_NEVER_BLOCKS = select.PIPE_BUF
READ_BLOCK = 1 << 20


class PassedFile(io.RawIOBase):
    """A raw binary view of passed descriptor ``fd`` (not closed here: its owner closes it).

    Wrap it in :class:`io.BufferedReader` or :class:`io.BufferedWriter` for large transfers.
    """

    def __init__(self, fd: int, check: Callable[[], None]) -> None:
        super().__init__()
        self._fd = fd
        self._check = check
        # Regular files (and block devices) never make a reader or writer wait for a peer.
        mode = os.fstat(fd).st_mode
        self._waits = not (stat.S_ISREG(mode) or stat.S_ISBLK(mode))

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self._wait(select.POLLIN)
        return os.readv(self._fd, [buffer])

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        if self._waits:
            self._wait(select.POLLOUT)
            view = view[:_NEVER_BLOCKS]
        return os.write(self._fd, view)

    def _wait(self, event: int) -> None:
        if not self._waits:
            return
        poller = select.poll()
        # POLLHUP and POLLERR end the wait too: the read or write that follows then reports
        # the end of the data or the broken pipe.
        poller.register(self._fd, event)
        while not poller.poll(CHECK_EVERY_MS):
            self._check()


def chunks(fd: int, check: Callable[[], None]) -> Iterator[bytes]:
    """The content of passed descriptor ``fd``, block by block, to its end."""
    source = PassedFile(fd, check)
    while data := source.read(READ_BLOCK):
        yield data
