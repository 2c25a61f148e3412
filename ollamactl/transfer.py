"""``ollamactl pull``, ``push``, ``export``, ``import`` and ``key``: the daemon does the transfer,
this draws one bar per layer (size, speed, time left) or plain lines when stderr is no terminal.

Files cross the socket as descriptors: ``export`` opens the archive here (a temp file beside it,
renamed only when the daemon reports success) and ``import`` opens the one to read, so the daemon
touches only what this user could.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from ollamactl.client import Client, ClientError, RequestFailed
from ollamactl.progress import Bar, Progress
from ollamactl.render import go_duration, human_bytes

# Ollama's bar keeps at most ten one-second samples to measure its speed.
_BUCKETS = 10
_clock = time.monotonic


class RateBar(Bar):
    """Ollama's progress bar: ``45% ▕███   ▏ 1.2 GB/4.7 GB  45 MB/s  1m20s``."""

    def __init__(self, message: str, total: int, completed: int) -> None:
        self._started = _clock()
        self._stopped_at: float | None = None
        self._initial = completed
        self._buckets: list[tuple[float, int]] = []
        self._value = completed
        super().__init__(message, total, completed)

    @property  # type: ignore[override]
    def completed(self) -> int:
        return self._value

    @completed.setter
    def completed(self, value: int) -> None:
        now = _clock()
        self._value = min(value, self.total)
        if self._value >= self.total and self._stopped_at is None:
            self._stopped_at = now
        if not self._buckets or now - self._buckets[-1][0] > 1.0:
            self._buckets = [*self._buckets, (now, self._value)][-_BUCKETS:]

    def rate(self) -> float:
        """Bytes per second, over whole seconds as Ollama measures it."""
        if self._stopped_at is not None:
            done, seconds = self._value - self._initial, self._stopped_at - self._started
        elif len(self._buckets) == 1:
            done = self._buckets[0][1] - self._initial
            seconds = self._buckets[0][0] - self._started
        elif self._buckets:
            (first_at, first), (last_at, last) = self._buckets[0], self._buckets[-1]
            done, seconds = last - first, last_at - first_at
        else:
            return 0.0
        seconds = round(seconds)
        return done / seconds if seconds else 0.0

    def line(self, width: int) -> str:
        percent = self._value / self.total * 100 if self.total > 0 else 0.0
        pre = f"{self.message.strip()} {percent:3.0f}%"
        running = self._stopped_at is None
        if running:
            suffix = human_bytes(self._value).rjust(6) + "/" + human_bytes(self.total).rjust(6)
        else:
            suffix = human_bytes(self.total).rjust(6) + " " * 7
        rate = self.rate()
        if running and rate > 0:
            left = (self.total - self._value) / rate
            suffix += "  " + human_bytes(int(rate)).rjust(6) + "/s"
            suffix += "  " + _time_left(left).rjust(6)
        else:
            suffix += " " * 18
        room = max(width - len(pre) - len(suffix) - 5, 0)
        filled = int(room * percent / 100)
        return f"{pre} ▕{'█' * filled}{' ' * (room - filled)}▏ {suffix}"


def _time_left(seconds: float) -> str:
    """At most two units, as Ollama: ``59m59s``, ``2h5m``, ``99h+``."""
    if seconds >= 100 * 3600:
        return "99h+"
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds // 60) % 60}m"
    return go_duration(round(seconds) * 10**9)


class TransferProgress(Progress):
    bar_type = RateBar


def pull_model(client: Client, name: str, insecure: bool) -> None:
    """Pull with Ollama's progress display."""
    with TransferProgress() as progress:
        for event in client.stream("pull", {"model": name, "insecure": insecure}):
            progress.pull_event(event)


def push_model(name: str, insecure: bool) -> None:
    try:
        with Client() as client, TransferProgress() as progress:
            for event in client.stream("push", {"model": name, "insecure": insecure}):
                progress.create_event(event)
    except RequestFailed as exc:
        text = str(exc).lower()
        if "access denied" in text or "unauthorized" in text:
            raise ClientError("you are not authorized to push to this namespace, create the "
                              "model under a namespace you own") from None
        raise
    print(f"\nYou can find your model at:\n\n\t{_destination(name)}")


def _destination(name: str) -> str:
    from ollamad.store import ModelName

    parsed = ModelName.parse(name)
    if parsed.host.endswith((".ollama.ai", ".ollama.com")):
        return "https://ollama.com/" + parsed.display_shortest().removesuffix(":latest")
    return str(parsed)


def public_key() -> str:
    with Client() as client:
        return client.call("key")["key"]


def export_model(name: str, target: str) -> None:
    """Write ``name`` to ``target`` (``-``: stdout); a failed export leaves no file behind."""
    if target == "-":
        if sys.stdout.isatty():
            raise ClientError("not writing an archive to a terminal; redirect stdout or name a "
                              "file")
        sys.stdout.flush()
        _run_with_file("export", {"model": name}, sys.stdout.fileno())
        return
    path = Path(target)
    temp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        _run_with_file("export", {"model": name}, fd)
        os.fsync(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    finally:
        os.close(fd)


def import_model(source: str, name: str | None) -> str:
    """Add the model in archive ``source`` (``-``: stdin); the name it was stored under."""
    args: dict[str, Any] = {"model": name} if name else {}
    if source == "-":
        return _run_with_file("import", args, sys.stdin.fileno()).get("model", name or "")
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _run_with_file("import", args, fd).get("model", name or "")
    finally:
        os.close(fd)


def _run_with_file(op: str, args: dict[str, Any], fd: int) -> dict[str, Any]:
    last: dict[str, Any] = {}
    with Client() as client, TransferProgress() as progress:
        for event in client.stream(op, args, files=[fd]):
            progress.create_event(event)
            last = event
    return last
