"""``ollamactl run``'s chat in a real pseudo-terminal, against a real daemon and model.

The test types as a person would and waits for what the terminal shows; it never sleeps.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import stat
import struct
import sys
import termios
import time
from pathlib import Path

from tests.daemon import Daemon

TIMEOUT = 120.0
# Wide enough that no answer here is word-wrapped (wrapping rewrites the screen).
COLUMNS = 1000
# Escape sequences (cursor moves, colours, bracketed paste), carriage returns and the spinner's
# braille frames: what a person would not read as text.
_NOISE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|\r|[\u2800-\u28ff]")


class Terminal:
    """One ``ollamactl`` process on a pseudo-terminal of its own."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: size the terminal, then become ollamactl
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLUMNS, 0, 0))
            os.execve(sys.executable, [sys.executable, "-m", "ollamactl", *args], env)
        self.pid, self.fd = pid, fd
        self.raw = b""
        self.seen = 0  # how much of the cleaned output earlier waits consumed

    @property
    def text(self) -> str:
        return _NOISE.sub("", self.raw.decode("utf-8", "replace"))

    def _read(self, deadline: float, waiting_for: str) -> bool:
        """Take in what the terminal shows next; False once the process has closed it."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {waiting_for} within {TIMEOUT}s; the terminal shows:\n"
                                 f"{self.text[self.seen:]}")
        ready, _, _ = select.select([self.fd], [], [], remaining)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the process closed the terminal
            data = b""
        self.raw += data
        return bool(data)

    def expect(self, wanted: str) -> str:
        """Wait until ``wanted`` shows up; the text shown before it (since the last wait)."""
        deadline = time.monotonic() + TIMEOUT
        while (index := self.text.find(wanted, self.seen)) < 0:
            if not self._read(deadline, repr(wanted)):
                raise AssertionError(f"ollamactl ended before {wanted!r}; the terminal shows:\n"
                                     f"{self.text[self.seen:]}")
        before, self.seen = self.text[self.seen:index], index + len(wanted)
        return before

    def expect_text(self) -> None:
        """Wait until something visible follows what was seen so far."""
        deadline = time.monotonic() + TIMEOUT
        while not self.text[self.seen:].strip():
            if not self._read(deadline, "an answer"):
                raise AssertionError("ollamactl ended before answering")

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def key(self, control: bytes) -> None:
        os.write(self.fd, control)

    def exit_status(self) -> int:
        # Read to the end: a process blocked writing to a full terminal would never exit.
        deadline = time.monotonic() + TIMEOUT
        while self._read(deadline, "the end"):
            pass
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


def _chat_then_save(env: dict[str, str], model: str) -> str:
    """Chat with ``model`` a little, save the session as mybot; the answer that was saved."""
    term = Terminal(["run", model], env)
    term.expect(">>> ")
    term.key(b"\x03")  # Ctrl-C at an empty prompt: a hint, not an exit
    term.expect("Use Ctrl + d or /bye to exit.")
    term.expect(">>> ")

    # Ctrl-C during an answer stops it and returns to the prompt.
    term.type("/set parameter num_predict 400")
    term.expect("Set parameter 'num_predict' to '400'")
    term.expect(">>> ")
    term.type("Tell me a long story about a dragon.")
    term.expect("dragon.\n")
    term.expect_text()
    term.key(b"\x03")
    term.expect(">>> ")
    term.type("/clear")
    term.expect("Cleared session context")
    term.expect(">>> ")

    for line, shown in (("/set parameter num_predict 24", "Set parameter 'num_predict' to '24'"),
                        ("/set parameter temperature 0", "Set parameter 'temperature' to '0'"),
                        ("/set parameter bogus 1", "Couldn't set parameter: \"unknown parameter "
                                                   "'bogus'\"")):
        term.type(line)
        term.expect(shown)
        term.expect(">>> ")
    term.type("What is the capital of France?")
    term.expect("France?\n")
    answer = term.expect(">>> ").strip()
    assert answer, "the model gave no answer"

    term.type("/save mybot")
    term.expect("Created new model 'mybot'")
    term.expect(">>> ")
    term.type("/bye")
    assert term.exit_status() == 0
    return answer


def _words(text: str) -> list[str]:
    return text.split()


def check_session_round_trip(env: dict[str, str], home: Path, model: str) -> None:
    answer = _chat_then_save(env, model)

    # The saved model replays the conversation before its first prompt.
    term = Terminal(["run", "mybot"], env)
    term.expect(">>> What is the capital of France?\n")
    replayed = term.expect(">>> ")
    assert _words(replayed) == _words(answer)
    term.key(b"\x04")  # Ctrl-D leaves
    assert term.exit_status() == 0

    history = home / ".ollama" / "history"
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    lines = history.read_text().splitlines()
    assert lines[-3:] == ["What is the capital of France?", "/save mybot", "/bye"]


def test_chat_save_and_replay(model_daemon: Daemon) -> None:
    # A terminal type of our choosing: readline behaves the same wherever the test runs.
    env = model_daemon.client_env() | {"TERM": "xterm-256color"}
    check_session_round_trip(env, model_daemon.home, "smollm2:135m")
