"""Socket activation through systemd's own tool: the daemon adopts the sockets it is passed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.daemon import Notifications, base_env, short_tempdir

ACTIVATE = shutil.which("systemd-socket-activate")
pytestmark = pytest.mark.skipif(ACTIVATE is None and not os.environ.get("CI"),
                                reason="systemd-socket-activate is not installed")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_socket_activated_list_then_idle_exit(tmp_path: Path) -> None:
    assert ACTIVATE is not None, "CI must install systemd (systemd-socket-activate)"
    rundir = short_tempdir()
    ctl, port = rundir / "ollamad.sock", free_port()
    notify = Notifications(rundir)
    env = base_env(tmp_path, tmp_path / "models") | {"NOTIFY_SOCKET": str(notify.path)}
    passed = [f"--setenv={key}={env[key]}" for key in
              ("HOME", "PATH", "OLLAMA_MODELS", "NOTIFY_SOCKET", "PYTHONUNBUFFERED")]
    activator = subprocess.Popen(
        [ACTIVATE, f"--listen={ctl}", f"--listen=127.0.0.1:{port}", "--fdname=ctl:http",
         *passed, sys.executable, "-m", "ollamad", "serve", "--idle-exit", "2s"],
        env=env, stderr=subprocess.PIPE, text=True)
    assert activator.stderr is not None
    lines: list[str] = []
    try:
        # The activator says when it listens; only then can a client connect.
        while sum("Listening on" in line for line in lines) < 2:
            line = activator.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        drain = threading.Thread(target=lambda: lines.extend(activator.stderr), daemon=True)
        drain.start()
        assert not notify.received
        # ollamactl's connection is what starts the daemon.
        result = subprocess.run([sys.executable, "-m", "ollamactl", "list"],
                                env=env | {"OLLAMAD_SOCKET": str(ctl)},
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr + "".join(lines)
        assert result.stdout.startswith("NAME")
        notify.wait_for("READY=1", activator)
        # The http socket systemd passed is the HTTP bridge's.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=60) as answer:
            assert answer.status == 200
        # Nothing more connects: the daemon must leave by itself, cleanly.
        assert activator.wait(timeout=60) == 0
        drain.join(timeout=10)
        stderr = "".join(lines)
        assert "idle for 2s: exiting" in stderr
        assert f"HTTP on http://127.0.0.1:{port}" in stderr
        assert ctl.exists(), "a passed socket belongs to systemd and must not be unlinked"
    finally:
        if activator.poll() is None:
            activator.kill()
        notify.close()
