"""Run the real daemon as a process, the way systemd would, and talk to it.

Readiness is the READY=1 datagram the daemon sends to a NOTIFY_SOCKET this test owns: no sleeps,
no polling of the socket file.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

READY_TIMEOUT = 60.0


class Notifications:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.received: list[str] = []

    def wait_for(self, line: str, proc: subprocess.Popen[bytes] | None = None,
                 timeout: float = READY_TIMEOUT) -> list[str]:
        """Block until a datagram carries ``line``; fail if ``proc`` exits first."""
        self.sock.settimeout(0.5 if proc is not None else timeout)
        waited = 0.0
        while True:
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                waited += 0.5
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(
                        f"daemon exited ({proc.returncode}) before {line}") from None
                if waited >= timeout:
                    raise AssertionError(f"no {line} within {timeout}s") from None
                continue
            lines = message.split("\n")
            self.received.extend(lines)
            if line in lines:
                return lines

    def close(self) -> None:
        self.sock.close()


def short_tempdir() -> Path:
    """Unix socket paths must fit in 108 bytes; pytest's tmp_path can be longer."""
    return Path(tempfile.mkdtemp(prefix="od-", dir="/tmp"))


def base_env(home: Path, models: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("OLLAMA", "LISTEN_", "NOTIFY_", "WATCHDOG_", "XDG_RUNTIME"))}
    env.update(HOME=str(home), OLLAMA_MODELS=str(models), PYTHONUNBUFFERED="1")
    return env


class Daemon:
    """One ``ollamad serve`` process with its own store, socket and notify socket."""

    def __init__(self, home: Path, extra_args: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> None:
        self.home = home
        self.models = home / ".ollama" / "models"
        self.rundir = short_tempdir()
        self.socket = self.rundir / "ollamad.sock"
        self.env = base_env(home, self.models) | (env or {})
        self.notify = Notifications(self.rundir)
        self.log = home / "daemon.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_args = list(extra_args)

    def start(self) -> Daemon:
        # No HTTP bridge unless a test asks for one: a test daemon must not take the user's
        # (or another test's) port 11434.
        http = [] if "--http" in self.extra_args else ["--http", "none"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ollamad", "serve", "--socket", str(self.socket), *http,
             *self.extra_args],
            env=self.env | {"NOTIFY_SOCKET": str(self.notify.path)},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._lines: list[str] = []
        self._logged = threading.Condition()
        threading.Thread(target=self._read_log, daemon=True).start()
        self.notify.wait_for("READY=1", self.proc)
        return self

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with open(self.log, "ab") as copy:
            for raw in self.proc.stderr:
                copy.write(raw)
                copy.flush()
                with self._logged:
                    self._lines.append(raw.decode(errors="replace"))
                    self._logged.notify_all()
        with self._logged:
            self._lines.append("")  # end of the log: the process has gone
            self._logged.notify_all()

    def wait_for_log(self, pattern: str, timeout: float = READY_TIMEOUT, start: int = 0) -> str:
        """Block until a daemon log line (from line ``start`` on) matches ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._logged:
            seen = start
            while True:
                for line in self._lines[seen:]:
                    if regex.search(line):
                        return line
                    if line == "":
                        raise AssertionError(f"daemon exited before logging {pattern!r}")
                seen = len(self._lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._logged.wait(remaining):
                    raise AssertionError(f"no log line matching {pattern!r} in {timeout}s")

    @property
    def log_position(self) -> int:
        with self._logged:
            return len(self._lines)

    def client_env(self) -> dict[str, str]:
        return self.env | {"OLLAMAD_SOCKET": str(self.socket)}

    def ollamactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "ollamactl", *args], env=self.client_env(),
                                capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"ollamactl {' '.join(args)} failed ({result.returncode}): "
                                 f"{result.stderr}")
        return result

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(str(self.socket))
        return sock

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()
        with contextlib.suppress(OSError):
            for path in self.rundir.iterdir():
                path.unlink()
            self.rundir.rmdir()


@contextlib.contextmanager
def running_daemon(home: Path, extra_args: Sequence[str] = (),
                   env: dict[str, str] | None = None) -> Iterator[Daemon]:
    daemon = Daemon(home, extra_args, env)
    try:
        yield daemon.start()
    finally:
        daemon.close()
