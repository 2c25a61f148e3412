"""End to end: the Debian package in a booted Debian 12 container, along the user's path.

The host builds the .deb (packaging/build-deb, cached by a hash of the sources) and a minimal
Debian 12 root (debootstrap, cached as a tarball), both under ~/.cache/ollamad. It unpacks the
root, adds a oneshot unit that runs CONTAINER_SCRIPT, and boots it with systemd-nspawn: systemd
is PID 1 in there, so the package's maintainer scripts, the sockets, the sandbox and socket
activation are systemd's own. The script installs the package with apt and walks the path
step by step, writing one JSON line per step to a bind-mounted folder; the unit powers the
container off when the script ends, either way, and the test then asserts every step. It waits
on that exit, never on a clock. The container has a private network (loopback only).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("OLLAMAD_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ollamad")
SUITE = "bookworm"
# The container's own needs; the package's Depends are added from the built .deb, so that
# apt installs it without a network.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "curl")
# What goes into the package, as packaging/build-deb copies it, plus the packaging itself.
SOURCES = ("pyproject.toml", "README.md", "ollamad", "ollamactl", "systemd", "packaging")
TOOLS = ("debootstrap", "systemd-nspawn", "dpkg-buildpackage", "dpkg-deb", "lintian")
BUILD_TIMEOUT = 60 * 60
# Cache entries unused this long are removed (each is some hundred megabytes).
STALE = 24 * 3600
BOOT_TIMEOUT = 15 * 60
MAX_EXPOSURE = 2.5
STEPS = ("apt_install", "packaged", "analyze", "activation", "create", "run", "http", "stop",
         "idle_exit", "remove", "purge_keeps_state", "reinstall", "purge_with_flag")


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/setup installs them)"
    return None


WHY_NOT = _why_not()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(WHY_NOT is not None and not os.environ.get("CI"),
                                 reason=f"end-to-end install test: {WHY_NOT}")]


# -- the package ----------------------------------------------------------------------------

def source_hash() -> str:
    digest = hashlib.sha256()
    for top in SOURCES:
        paths = [REPO / top] if (REPO / top).is_file() else sorted((REPO / top).rglob("*"))
        for path in paths:
            if not path.is_file() or "__pycache__" in path.parts or \
                    any(part.endswith(".egg-info") for part in path.parts):
                continue
            digest.update(f"{path.relative_to(REPO)}\0{path.stat().st_mode & 0o111}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def cache_lock(folder: Path, key: str) -> Iterator[None]:
    """One builder per cache entry: other test runs (other checkouts, CI) share the cache."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def prune(folder: Path, keep: str) -> None:
    """Drop entries nobody used for a day; a concurrent run may be using any newer one."""
    for entry in folder.iterdir():
        if keep not in entry.name and time.time() - entry.stat().st_mtime > STALE:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def hold(source: Path, folder: Path) -> Path:
    """A link of our own to a cache entry, which pruning by another run cannot take away."""
    held = folder / source.name
    try:
        os.link(source, held)
    except OSError:
        shutil.copy(source, held)
    return held


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built from this checkout, rebuilt only when a source file changed."""
    assert WHY_NOT is None, f"CI must be able to run the end-to-end test: {WHY_NOT}"
    key, cache = source_hash(), CACHE / "deb"
    folder = cache / key
    with cache_lock(cache, key):
        if not list(folder.glob("ollamad_*.deb")):
            staging = cache / f".{key}.{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            subprocess.run([str(REPO / "packaging" / "build-deb"), str(staging)], check=True,
                           timeout=BUILD_TIMEOUT)
            staging.rename(folder)
        os.utime(folder)
        held = hold(next(folder.glob("ollamad_*.deb")), tmp_path_factory.mktemp("deb"))
    prune(cache, key)
    return held


# -- the container's root -------------------------------------------------------------------

def depends(package: Path) -> list[str]:
    """Package names in Depends/Pre-Depends, the first of each set of alternatives."""
    fields = subprocess.run(["dpkg-deb", "-f", str(package), "Pre-Depends", "Depends"],
                            check=True, capture_output=True, text=True).stdout
    names = []
    for line in fields.splitlines():
        for item in line.partition(":")[2].split(","):
            name = item.split("|")[0].split("(")[0].strip().removesuffix(":any")
            if name:
                names.append(name)
    return names


def debian_mirror() -> str:
    """The Debian mirror apt on this machine uses (debootstrap's default may be unreachable)."""
    if mirror := os.environ.get("OLLAMAD_DEBIAN_MIRROR"):
        return mirror
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        text = source.read_text() if source.is_file() else ""
        for uri in re.findall(r"(?:^URIs:|^deb)\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri
    return "http://deb.debian.org/debian"


@pytest.fixture(scope="module")
def rootfs_tarball(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian 12 minbase, systemd, python3 and the package's Depends, debootstrapped once."""
    packages = sorted({*BASE_PACKAGES, *depends(deb)})
    key = hashlib.sha256(json.dumps([SUITE, packages]).encode()).hexdigest()[:16]
    cache = CACHE / "rootfs"
    tarball = cache / f"debian-{SUITE}-{key}.tar"
    with cache_lock(cache, key):
        if not tarball.exists():
            build_rootfs(packages, tarball)
        os.utime(tarball)
        held = hold(tarball, tmp_path_factory.mktemp("rootfs"))
    prune(cache, key)
    return held


def build_rootfs(packages: list[str], tarball: Path) -> None:
    work = tarball.parent / f".build-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
                        SUITE, str(work / "root"), debian_mirror()],
                       check=True, capture_output=True, text=True, timeout=30 * 60)
        # Downloaded packages and lists are not needed to boot or to install a local .deb.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (work / "root" / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        subprocess.run(["tar", "--numeric-owner", "-C", str(work / "root"), "-cf",
                        str(work / "rootfs.tar"), "."], check=True)
        (work / "rootfs.tar").rename(tarball)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"debootstrap failed:\n{exc.stdout}\n{exc.stderr}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def container_root(rootfs_tarball: Path, tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-xf", str(rootfs_tarball)],
                   check=True)
    yield root
    # Some hundred megabytes once the package is in: not left for pytest's tmp rotation.
    shutil.rmtree(root, ignore_errors=True)


# -- inside the container -------------------------------------------------------------------

E2E_UNIT = """\
[Unit]
Description=ollamad end-to-end checks
After=multi-user.target
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
ExecStart=/e2e/run.sh
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=14min

[Install]
WantedBy=multi-user.target
"""

CONTAINER_SCRIPT = r"""#!/bin/bash
# The user's path, inside the booted container. Each step runs in a fresh shell (this script
# again, with --step), so that set -e holds inside it, and appends one JSON line to
# /e2e/results.jsonl; the first failing step ends the run.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
deb=$(echo /e2e/ollamad_*.deb)

as_alice() { runuser -u alice -- env --chdir=/home/alice "$@"; }
prop() { systemctl show -P "$2" "$1"; }

apt_install() {
  apt-get install -y --no-install-recommends "$deb"
}

packaged() {
  # The package enabled and started the sockets; nothing runs yet.
  for unit in ollamad.socket ollamad-http.socket; do
    echo "$unit: $(systemctl is-enabled "$unit") $(prop "$unit" ActiveState)"
    [ "$(systemctl is-enabled "$unit")" = enabled ]
    [ "$(prop "$unit" ActiveState)" = active ]
  done
  echo "ollamad.service: $(prop ollamad.service ActiveState)"
  [ "$(prop ollamad.service ActiveState)" = inactive ]
  stat -c '%a %U %G' /run/ollamad/ollamad.sock | tee -a /dev/stderr | grep -qx '660 root ollama'
  getent passwd ollama
  test -x /usr/bin/ollamad && test -x /usr/bin/ollamactl
  test -f /usr/share/man/man1/ollamad.1.gz && test -f /usr/share/man/man1/ollamactl.1.gz
  test -f /etc/default/ollamad
  test -f /usr/lib/systemd/user/ollamad.socket
}

analyze() {
  # No man-db in the container: man pages are checked by lintian at build time.
  # Warnings leave the exit status at 0: any output fails.
  warnings=$(systemd-analyze verify --man=no \
             ollamad.service ollamad.socket ollamad-http.socket 2>&1)
  echo "$warnings"
  [ -z "$warnings" ]
  systemd-analyze security ollamad.service | grep 'Overall exposure level'
}

activation() {
  useradd --create-home --groups ollama alice
  useradd --create-home bob
  as_alice ollamactl list | tee -a /dev/stderr | grep -q '^NAME'
  # READY=1 may still be on its way to systemd: activating counts as started.
  state=$(prop ollamad.service ActiveState)
  echo "ollamad.service after ollamactl list: $state"
  [ "$state" = active ] || [ "$state" = activating ]
  # Not in group ollama: the socket's mode turns bob away.
  if runuser -u bob -- ollamactl list; then echo "bob was let in"; exit 1; fi
}

create() {
  install -o alice -g alice -m 0644 /e2e/model.gguf /home/alice/smollm2.gguf
  echo 'FROM /home/alice/smollm2.gguf' > /home/alice/Modelfile
  as_alice ollamactl create smollm2 -f Modelfile
  as_alice ollamactl list | tee -a /dev/stderr | grep -q '^smollm2:latest'
}

run() {
  answer=$(as_alice ollamactl run smollm2 "Say hi")
  echo "answer: $answer"
  # Where the time went (loading, generating), for whoever reads a failure.
  journalctl -u ollamad.service -o short-monotonic --no-pager | tail -n 5
  [ -n "${answer//[[:space:]]/}" ]
}

http() {
  curl -fsS http://localhost:11434/api/tags | tee -a /dev/stderr | grep -q '"smollm2:latest"'
}

stop() {
  systemctl stop ollamad.service
  for key in ActiveState Result ExecMainCode ExecMainStatus; do
    echo "$key=$(prop ollamad.service "$key")"
  done
  [ "$(prop ollamad.service Result)" = success ]
  [ "$(prop ollamad.service ExecMainStatus)" = 0 ]
  [ "$(prop ollamad.socket ActiveState)" = active ]
  journalctl -u ollamad.service --no-pager | grep 'ollamad stopped'
}

idle_exit() {
  echo OLLAMAD_IDLE_EXIT=3s >> /etc/default/ollamad
  cursor=$(journalctl -n1 --show-cursor -q | sed -n 's/^-- cursor: //p')
  as_alice ollamactl list >/dev/null
  pid=$(prop ollamad.service MainPID)
  echo "started by ollamactl: pid $pid"
  # The daemon says why it exits, then systemd that the unit is down: waited for as log lines.
  timeout 120 python3 - "$cursor" 'idle for 3s: exiting' 'Deactivated successfully' <<'PY'
import subprocess, sys
cursor, *patterns = sys.argv[1:]
journal = subprocess.Popen(["journalctl", "-f", "-q", "-o", "cat", "-u", "ollamad.service",
                            f"--after-cursor={cursor}"], stdout=subprocess.PIPE, text=True)
for line in journal.stdout:
    print(line, end="")
    if patterns[0] in line:
        patterns.pop(0)
        if not patterns:
            break
journal.terminate()
PY
  echo "Result=$(prop ollamad.service Result) ExecMainStatus=$(prop ollamad.service ExecMainStatus)"
  [ "$(prop ollamad.service Result)" = success ]
  [ "$(prop ollamad.service ExecMainStatus)" = 0 ]
  # The HTTP socket starts it again.
  curl -fsS http://localhost:11434/api/tags | grep -q smollm2
  again=$(prop ollamad.service MainPID)
  echo "started by curl: pid $again"
  [ "$again" != 0 ] && [ "$again" != "$pid" ]
}

remove() {
  cp /var/lib/ollama/id_ed25519.pub /e2e/identity.pub
  apt-get remove -y ollamad
  ls /var/lib/ollama/models/manifests/registry.ollama.ai/library/smollm2
  test -f /etc/default/ollamad
  test ! -e /usr/lib/ollamad
  test ! -e /run/ollamad/ollamad.sock
  [ "$(prop ollamad.socket LoadState)" = not-found ]
}

purge_keeps_state() {
  apt-get purge -y ollamad
  test -d /var/lib/ollama/models
  test ! -e /etc/default/ollamad
}

reinstall() {
  apt-get install -y --no-install-recommends "$deb"
  as_alice ollamactl list | tee -a /dev/stderr | grep -q '^smollm2:latest'
  cmp /var/lib/ollama/id_ed25519.pub /e2e/identity.pub
}

purge_with_flag() {
  touch /var/lib/ollama/.remove-on-purge
  apt-get purge -y ollamad
  test ! -e /var/lib/ollama
}

if [ "${1:-}" = --step ]; then
  "$2"
  exit
fi

for name in __STEPS__; do
  start=$(date +%s.%N)
  rc=0
  # Appending, so that "tee -a /dev/stderr" in a step adds to the log instead of truncating it.
  "$0" --step "$name" >> "/e2e/$name.log" 2>&1 || rc=$?
  python3 - "$name" "$rc" "$start" >> /e2e/results.jsonl <<'PY'
import json, sys, time
name, rc, start = sys.argv[1:]
with open(f"/e2e/{name}.log", errors="replace") as log:
    output = log.read()[-6000:]
print(json.dumps({"step": name, "rc": int(rc), "output": output,
                  "seconds": round(time.time() - float(start), 1)}))
PY
  echo "e2e: $name: exit status $rc" >&2
  [ "$rc" = 0 ] || exit 1
done
"""


def boot(root: Path, shared: Path, console: Path) -> str:
    """Boot the container and wait for it to power off; says how it ended."""
    command = ["systemd-nspawn", "--directory", str(root), "--boot", "--register=no",
               "--keep-unit", "--private-network", f"--machine=ollamad-e2e-{os.getpid()}",
               f"--bind={shared}:/e2e", "--console=read-only"]
    with console.open("w") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT)
        try:
            return f"nspawn exit status {process.wait(timeout=BOOT_TIMEOUT)}"
        except subprocess.TimeoutExpired:
            # nspawn turns SIGTERM into a clean shutdown of the container.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            return f"killed after {BOOT_TIMEOUT}s"


def test_apt_install_socket_activation_and_purge(deb: Path, container_root: Path,
                                                 smollm2_gguf: Path, tmp_path: Path) -> None:
    shared = tmp_path / "e2e"
    shared.mkdir()
    hold(deb, shared)
    hold(smollm2_gguf, shared).rename(shared / "model.gguf")
    script = shared / "run.sh"
    script.write_text(CONTAINER_SCRIPT.replace("__STEPS__", " ".join(STEPS)))
    script.chmod(0o755)
    units = container_root / "etc/systemd/system"
    (units / "ollamad-e2e.service").write_text(E2E_UNIT)
    (units / "multi-user.target.wants").mkdir(exist_ok=True)
    (units / "multi-user.target.wants/ollamad-e2e.service").symlink_to(
        "/etc/systemd/system/ollamad-e2e.service")

    console = tmp_path / "console.log"
    started = time.monotonic()
    ended = boot(container_root, shared, console)
    print(f"container: booted, ran the steps and powered off in {time.monotonic() - started:.0f}s")

    results_file = shared / "results.jsonl"
    results = {}
    if results_file.exists():
        results = {r["step"]: r for r in map(json.loads, results_file.read_text().splitlines())}
    for step in STEPS:
        if step in results:
            print(f"  {step}: exit {results[step]['rc']} in {results[step]['seconds']}s")
    tail = "\n".join(console.read_text(errors="replace").splitlines()[-60:])
    for step in STEPS:
        assert step in results, f"step {step} did not run ({ended}):\n{tail}"
        record = results[step]
        assert record["rc"] == 0, \
            f"step {step} failed ({ended}):\n{record['output']}\n--- console\n{tail}"

    assert ended.startswith("nspawn"), f"the container did not power off by itself ({ended})"
    exposure = re.search(r"Overall exposure level for ollamad\.service: ([0-9.]+)",
                         results["analyze"]["output"])
    assert exposure and float(exposure.group(1)) <= MAX_EXPOSURE, results["analyze"]["output"]
    print(f"  systemd-analyze security ollamad.service: {exposure.group(1)}")
