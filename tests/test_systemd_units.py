"""The systemd units and sysusers.d file: systemd's own checks, and the settings the design fixes.

systemd-analyze runs against a throwaway root holding the host's stock units, our units and a
stand-in /usr/bin/ollamad, so that the checks work on a checkout where nothing is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
SYSTEM_UNITS = ("ollamad.socket", "ollamad-http.socket", "ollamad.service")
USER_UNITS = ("ollamad.socket", "ollamad.service")
MAX_EXPOSURE = 2.5

ANALYZE = shutil.which("systemd-analyze")
SYSUSERS = shutil.which("systemd-sysusers")
STOCK_UNITS = Path("/usr/lib/systemd/system")
pytestmark = pytest.mark.skipif(
    (ANALYZE is None or not STOCK_UNITS.is_dir()) and not os.environ.get("CI"),
    reason="systemd is not installed (systemd-analyze)")


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of (key, value) pairs in file order: keys repeat (SystemCallFilter=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, _, value = line.partition("=")
            current.append((key, value))
    return sections


def values(path: Path, section: str, key: str) -> list[str]:
    return [v for k, v in parse_unit(path).get(section, []) if k == key]


def one(path: Path, section: str, key: str) -> str:
    found = values(path, section, key)
    assert len(found) == 1, f"{path.name}: [{section}] {key}= set {len(found)} times"
    return found[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root for ``systemd-analyze --root``: stock units, ours in /etc, an ExecStart target."""
    assert ANALYZE is not None, "CI must install systemd (systemd-analyze)"
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(STOCK_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/lib/systemd/user").mkdir(parents=True)
    for name in SYSTEM_UNITS:
        shutil.copy(UNITS / name, root / "usr/lib/systemd/system" / name)
    for name in USER_UNITS:
        shutil.copy(UNITS / "user" / name, root / "usr/lib/systemd/user" / name)
    stub = root / "usr/bin/ollamad"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    return root


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args, f"--root={root}"], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("unit", SYSTEM_UNITS)
def test_system_unit_verifies(root: Path, unit: str) -> None:
    # Warnings (an unknown key, a bad value) exit 0 too: any output is a failure. Man pages are
    # checked by lintian on the package, not here where none is installed.
    result = analyze(root, "verify", "--man=no", unit)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_catches_a_misspelt_key(root: Path, tmp_path: Path) -> None:
    # The check above must be able to fail: a unit with a typo does not pass it.
    broken = root / "usr/lib/systemd/system/ollamad-broken.socket"
    broken.write_text((UNITS / "ollamad.socket").read_text().replace("SocketMode", "SockMode"))
    try:
        result = analyze(root, "verify", "--man=no", broken.name)
    finally:
        broken.unlink()
    assert "SockMode" in result.stdout + result.stderr


def test_user_units_verify(root: Path, tmp_path: Path) -> None:
    # verify cannot take --root for user units: it reads copies whose ExecStart points at the
    # stand-in, the one change (the system unit's check covers the /usr/bin/ollamad path).
    stub = str(root / "usr/bin/ollamad")
    for name in USER_UNITS:
        text = (UNITS / "user" / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/bin/ollamad", stub))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    result = subprocess.run([ANALYZE or "systemd-analyze", "verify", "--man=no", "--user",
                             *(str(tmp_path / name) for name in USER_UNITS)],
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, XDG_RUNTIME_DIR=str(runtime)))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_security_exposure(root: Path) -> None:
    result = analyze(root, "security", "--offline=yes", "ollamad.service")
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for ollamad\.service: ([0-9.]+)", result.stdout)
    assert found, result.stdout
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout


def test_sockets_as_designed() -> None:
    ctl, http = UNITS / "ollamad.socket", UNITS / "ollamad-http.socket"
    assert one(ctl, "Socket", "ListenStream") == "/run/ollamad/ollamad.sock"
    assert (one(ctl, "Socket", "SocketMode"), one(ctl, "Socket", "SocketUser"),
            one(ctl, "Socket", "SocketGroup")) == ("0660", "root", "ollama")
    assert one(ctl, "Socket", "FileDescriptorName") == "ctl"
    assert one(http, "Socket", "ListenStream") == "127.0.0.1:11434"
    assert one(http, "Socket", "FileDescriptorName") == "http"
    for socket in (ctl, http):
        assert one(socket, "Socket", "Service") == "ollamad.service"
        assert one(socket, "Install", "WantedBy") == "sockets.target"


def test_service_as_designed() -> None:
    service = UNITS / "ollamad.service"
    expected = {
        "Type": "notify", "User": "ollama", "Group": "ollama", "StateDirectory": "ollama",
        "Restart": "on-failure", "UMask": "0027", "EnvironmentFile": "-/etc/default/ollamad",
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "RestrictNamespaces": "yes",
        "LockPersonality": "yes", "CapabilityBoundingSet": "",
    }
    assert {key: one(service, "Service", key) for key in expected} == expected
    assert values(service, "Service", "SystemCallFilter")[0] == "@system-service"
    assert one(service, "Service", "WatchdogSec")
    # The idle time comes from a variable /etc/default/ollamad may set, with a default here.
    assert "--idle-exit ${OLLAMAD_IDLE_EXIT}" in one(service, "Service", "ExecStart")
    assert one(service, "Service", "Environment").startswith("OLLAMAD_IDLE_EXIT=")
    # A RuntimeDirectory= would be deleted, socket and all, each time the service stops.
    assert not values(service, "Service", "RuntimeDirectory")


def test_user_pair_uses_the_users_runtime_dir() -> None:
    assert one(UNITS / "user/ollamad.socket", "Socket", "ListenStream") == "%t/ollamad.sock"
    # No StateDirectory=: without $STATE_DIRECTORY the store is ~/.ollama/models.
    assert not values(UNITS / "user/ollamad.service", "Service", "StateDirectory")


@pytest.mark.skipif(SYSUSERS is None and not os.environ.get("CI"),
                    reason="systemd-sysusers is not installed")
def test_sysusers_creates_the_ollama_user_and_group(tmp_path: Path) -> None:
    assert SYSUSERS is not None
    (tmp_path / "etc").mkdir()
    result = subprocess.run([SYSUSERS, f"--root={tmp_path}", str(UNITS / "ollamad.sysusers")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc/passwd").read_text().splitlines()
    group = (tmp_path / "etc/group").read_text().splitlines()
    user = next(line.split(":") for line in passwd if line.startswith("ollama:"))
    assert user[5] == "/var/lib/ollama"
    assert int(user[2]) < 1000, "a system user"
    assert any(line.startswith("ollama:") for line in group)
    assert "Failed" not in result.stderr and "Ignoring" not in result.stderr, result.stderr
