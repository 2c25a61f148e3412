"""Spinners and progress bars on stderr, drawn as the ollama CLI draws them.

On a terminal the lines are redrawn in place every 100 ms by a background thread (the main
thread is usually blocked reading the socket). Elsewhere each line is printed once, plainly, so
that logs stay readable.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

from ollamactl.render import human_bytes

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_DEFAULT_WIDTH = 80


class Spinner:
    def __init__(self, message: str) -> None:
        self.message = message
        self.stopped = False
        self._started = time.monotonic()

    def line(self, width: int) -> str:
        text = self.message.strip() + " " if self.message.strip() else ""
        if self.stopped:
            return text
        frame = int((time.monotonic() - self._started) * 10) % len(_FRAMES)
        return text + _FRAMES[frame] + " "


class Bar:
    def __init__(self, message: str, total: int, completed: int) -> None:
        self.message, self.total, self.completed = message, total, completed

    @property
    def stopped(self) -> bool:
        return self.completed >= self.total

    def line(self, width: int) -> str:
        percent = self.completed / self.total * 100 if self.total > 0 else 0.0
        pre = f"{self.message.strip()} {percent:3.0f}%"
        if self.stopped:
            suffix = human_bytes(self.total).rjust(6) + " " * 25
        else:
            suffix = (human_bytes(self.completed).rjust(6) + "/"
                      + human_bytes(self.total).rjust(6) + " " * 18)
        room = max(width - len(pre) - len(suffix) - 5, 0)
        filled = int(room * percent / 100)
        return f"{pre} ▕{'█' * filled}{' ' * (room - filled)}▏ {suffix}"


class Progress:
    """Ordered status lines (spinners) and per-digest bars, as ``ollama pull``/``create`` show."""

    # What bar() draws; a subclass may draw more (ollamactl.transfer adds speed and time left).
    bar_type: type[Bar] = Bar

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._states: list[Spinner | Bar] = []
        self._bars: dict[str, Bar] = {}
        self._spinner: Spinner | None = None
        self._drawn = 0
        self._printed: set[int] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        if self.tty:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self, message: str) -> None:
        """A new spinner line; the previous one stops where it is."""
        with self._lock:
            if self._spinner is not None:
                self._spinner.stopped = True
            self._spinner = Spinner(message)
            self._states.append(self._spinner)
        self._plain()

    def relabel(self, message: str) -> None:
        """Change the current spinner's message (a step that now knows more about itself)."""
        with self._lock:
            if self._spinner is not None and self.tty:
                self._spinner.message = message
                return
        self.status(message)

    def bar(self, key: str, message: str, total: int, completed: int) -> None:
        with self._lock:
            bar = self._bars.get(key)
            if bar is None:
                if self._spinner is not None:
                    self._spinner.stopped = True
                bar = self._bars[key] = self.bar_type(message, total, completed)
                self._states.append(bar)
            bar.completed = min(completed, bar.total)
        self._plain()

    def pull_event(self, event: dict) -> None:
        """One event of a pull: a bar per layer digest, a spinner per status."""
        digest = event.get("digest", "")
        if digest:
            # The first event of a layer announces its size before the download starts; a 0%
            # bar for every layer up front would only confuse.
            if event.get("completed", 0) == 0:
                return
            name = digest.removeprefix("sha256:").strip()
            if digest.startswith("sha256:"):
                name = name[:12]
            self.bar(digest, f"pulling {name}:", event.get("total", 0), event["completed"])
        else:
            self._status_changed(event.get("status", ""))

    def create_event(self, event: dict) -> None:
        """One event of a create or save: a bar per digest named by its status, else spinners."""
        digest = event.get("digest", "")
        if digest:
            self.bar(digest, event.get("status") or f"pulling {digest[7:19]}...",
                     event.get("total", 0), event.get("completed", 0))
        else:
            self._status_changed(event.get("status", ""))

    def _status_changed(self, status: str) -> None:
        if self._spinner is None or status != self._spinner.message:
            self.status(status)

    def stop(self, clear: bool = False) -> None:
        """Stop drawing; the final lines stay (or are erased with ``clear``)."""
        if self._done.is_set():
            return
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for state in self._states:
                if isinstance(state, Spinner):
                    state.stopped = True
            if not self.tty:
                self._plain_locked()
            elif clear:
                self._erase()
            elif self._states:
                self._draw()
                self.stream.write("\n")
        self.stream.flush()

    # -- drawing ----------------------------------------------------------------------------

    def _tick(self) -> None:
        while not self._done.wait(0.1):
            with self._lock:
                self._draw()

    def _draw(self) -> None:
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError):
            width = _DEFAULT_WIDTH
        out = ["\033[?25l", "\033[A" * max(self._drawn - 1, 0), "\033[1G"]
        for index, state in enumerate(self._states):
            out.append(state.line(width) + "\033[K")
            if index < len(self._states) - 1:
                out.append("\n")
        out.append("\033[?25h")
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(self._states)

    def _erase(self) -> None:
        out = []
        for index in range(self._drawn):
            if index:
                out.append("\033[A")
            out.append("\033[2K\033[1G")
        self.stream.write("".join(out))
        self._drawn = 0

    def _plain(self) -> None:
        if not self.tty:
            with self._lock:
                self._plain_locked()

    def _plain_locked(self) -> None:
        # Without a terminal, a spinner line is printed once it appears, a bar once it is full.
        for index, state in enumerate(self._states):
            if index in self._printed:
                continue
            if isinstance(state, Bar) and not (state.stopped or self._done.is_set()):
                continue
            self._printed.add(index)
            # A spinner is printed as it will end, without its frame.
            text = state.message.strip() if isinstance(state, Spinner) else \
                state.line(_DEFAULT_WIDTH).rstrip()
            if text:
                self.stream.write(text + "\n")
        self.stream.flush()


def spinner(stream: TextIO | None = None) -> Progress:
    """An anonymous spinner for a wait (model load, first token); stop it with ``clear=True``."""
    progress = Progress(stream)
    if progress.tty:
        progress.status("")
    return progress
