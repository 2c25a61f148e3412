"""Fault injection: kill -9, a full disk, a registry that drops or stalls, a client that goes.

After each fault the same things hold: every manifest's blobs exist and verify, no partial file
is ever visible as a blob (temp files and partial downloads keep names no blob has), the daemon
(or its successor) serves, the next operation succeeds, and a pull resumes where it stopped.

Cited, not repeated:

- a runner killed mid-stream: tests/test_generate.py::
  test_a_killed_runner_fails_its_request_and_the_next_one_works (and tests/test_runner.py::
  test_killed_runner_fails_requests_clearly);
- the daemon killed mid-pull, then resuming: tests/test_registry.py::
  test_a_pull_killed_mid_blob_resumes_where_it_stopped;
- truncating, stalling and cancelled downloads in-process: tests/test_registry_hostile.py;
- an HTTP client that disconnects mid-generation: tests/test_http_models.py::
  test_a_client_that_disconnects_cancels_its_generation;
- a process killed mid-blob-write: tests/test_store.py::
  test_kill_during_a_blob_write_leaves_no_visible_blob.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ollamactl.client import Client, ClientError, RequestFailed
from ollamad.protocol import ClientConnection, Event
from ollamad.registry.parts import Part
from ollamad.store.files import TEMP_PREFIX
from tests import test_registry_hostile
from tests.daemon import Daemon, running_daemon
from tests.processes import children
from tests.registry_fixtures import Hostile, digest_of, model_manifest
from tests.test_hardening import (
    MB,
    MODEL_MEDIA,
    SOCKET_ONLY,
    assert_serving,
    assert_store_intact,
    oci_layout,
    refused,
    request_frame,
    run_in_thread,
    tar_of,
    write_tiny_gguf,
)

REPO = Path(__file__).resolve().parent.parent
# Small parts, few and quick retries: a fault shows within seconds.
TRANSFER_ENV = {"OLLAMAD_TRANSFER_PART_MIN": "4MB", "OLLAMAD_TRANSFER_RETRIES": "2",
                "OLLAMAD_TRANSFER_BACKOFF": "100ms"}
WAIT = 60.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Wait for something the daemon does that no log line or socket announces (a file
    growing, bytes leaving a registry): a bounded poll."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def temp_files(models: Path) -> list[Path]:
    return sorted((models / "blobs").glob(f"{TEMP_PREFIX}*"))


def recorded(models: Path) -> int:
    """The bytes the part states of partial downloads say are on disk."""
    found = (Part.from_json(path.read_bytes()) for path in (models / "blobs").glob(
        "*-partial-*"))
    return sum(part.completed for part in found if part is not None)


def largest_temp(models: Path) -> int:
    return max((path.stat().st_size for path in temp_files(models)), default=0)


def age(folder: Path, seconds: float = 7200) -> None:
    """Make every file in ``folder`` look ``seconds`` old (past the start-up prune's grace)."""
    then = time.time() - seconds
    for path in folder.iterdir():
        os.utime(path, (then, then))


def call_with_file(daemon: Daemon, op: str, args: dict[str, Any], path: Path) -> dict[str, Any]:
    fd = os.open(path, os.O_RDONLY)
    try:
        with Client(daemon.socket) as client:
            return client.call(op, args, files=[fd])
    finally:
        os.close(fd)


def add_model(registry: Hostile, size: int) -> str:
    """A one-layer model of ``size`` random bytes as library/m; the layer's digest."""
    data, config = os.urandom(size), b'{"model_format":"gguf"}'
    blobs = {digest_of(data): data, digest_of(config): config}
    registry.blobs.update(blobs)
    registry.manifests["library/m:latest"] = model_manifest(blobs, [(MODEL_MEDIA,
                                                                     digest_of(data))],
                                                            digest_of(config))
    return digest_of(data)


# The misbehaving registry of the in-process registry tests, as a fixture here too.
hostile = test_registry_hostile.hostile


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")


# -- kill -9 of the daemon ----------------------------------------------------------------------


class PipeFeeder:
    """A pipe whose read end goes to the daemon with a request; the test writes the content,
    so it knows how far the daemon has read when it pulls the plug."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()

    def start(self, daemon: Daemon, op: str, args: dict[str, Any]) -> list[Any]:
        def request() -> Any:
            with Client(daemon.socket) as client:
                return client.call(op, args, files=[self.read_fd])

        _, outcome = run_in_thread(request)
        return outcome

    def write(self, data: bytes) -> None:
        """Blocks until the daemon has read all but a pipe buffer's worth."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.write_fd, view):]

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def feeder() -> Iterator[PipeFeeder]:
    pipe = PipeFeeder()
    try:
        yield pipe
    finally:
        pipe.close()


class TestDaemonKilled:
    """kill -9 in the middle of the long step of a create (the weights streaming in) and of an
    import: what was written stays a temp file no one mistakes for a blob, the restarted daemon
    serves, the same operation then succeeds, and the start-up prune takes old temps away."""

    def _kill_while_feeding(self, home: Path, op: str, data: bytes) -> Daemon:
        """Start ``op`` reading ``data`` from a pipe, kill -9 the daemon once it has written
        4 MB of it into the store, and start a new daemon on the same store."""
        daemon = Daemon(home, SOCKET_ONLY).start()
        try:
            with feeder() as pipe:
                outcome = pipe.start(daemon, op, {})
                pipe.write(data[:len(data) // 2])
                wait_until(lambda: largest_temp(daemon.models) >= 4 * MB, "a growing temp file")
                assert daemon.proc is not None
                os.kill(daemon.proc.pid, signal.SIGKILL)
                daemon.proc.wait()
        finally:
            daemon.close()
        wait_until(lambda: bool(outcome), "the client to see the daemon go")
        assert isinstance(outcome[0], ClientError)
        restarted = Daemon(home, SOCKET_ONLY).start()
        assert_store_intact(restarted.models)
        # Nothing but the young temp file: no blob, no manifest.
        assert all(p.name.startswith(TEMP_PREFIX) for p in (restarted.models / "blobs").iterdir())
        assert list((restarted.models / "manifests").iterdir()) == []
        assert_serving(restarted)
        return restarted

    def _restart_after_the_grace(self, daemon: Daemon) -> Daemon:
        """Age the temp files past the start-up prune's grace and restart: they are gone."""
        age(daemon.models / "blobs")
        daemon.close()
        restarted = Daemon(daemon.home, SOCKET_ONLY).start()
        assert temp_files(restarted.models) == []
        assert_store_intact(restarted.models, allow_partial=False)
        assert_serving(restarted)
        return restarted

    def test_kill_mid_create(self, tmp_path: Path, tiny: Path) -> None:
        weights = tiny.read_bytes() + os.urandom(16 * MB)  # tensors never read by create
        big = tmp_path / "big.gguf"
        big.write_bytes(weights)
        daemon = self._kill_while_feeding(tmp_path, "blob", weights)
        try:
            digest = call_with_file(daemon, "blob", {}, big)["digest"]
            with Client(daemon.socket) as client:
                client.call("create", {"model": "made", "files": {"big.gguf": digest}})
            daemon = self._restart_after_the_grace(daemon)
            with Client(daemon.socket) as client:
                assert [m["name"] for m in client.call("list")["models"]] == ["made:latest"]
        finally:
            daemon.close()

    def test_kill_mid_import(self, tmp_path: Path) -> None:
        archive = tar_of(oci_layout(os.urandom(16 * MB)))
        path = tmp_path / "model.tar"
        path.write_bytes(archive)
        daemon = self._kill_while_feeding(tmp_path, "import", archive)
        try:
            assert call_with_file(daemon, "import", {}, path)["model"] == "hostile:v1"
            daemon = self._restart_after_the_grace(daemon)
            with Client(daemon.socket) as client:
                assert [m["name"] for m in client.call("list")["models"]] == ["hostile:v1"]
        finally:
            daemon.close()


# -- a full disk --------------------------------------------------------------------------------

STORE_SIZE = 32 * MB


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[Path]:
    """The daemon's store on a 32 MB tmpfs, so that it can be filled. Needs root."""
    models = tmp_path / ".ollama" / "models"
    models.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={STORE_SIZE},mode=0755",
                              "tmpfs", str(models)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for the store (needs root): "
                    f"{mounted.stderr.strip()}")
    try:
        yield models
    finally:
        if subprocess.run(["umount", str(models)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(models)], check=False)


def fill(folder: Path) -> Path:
    """Take every free byte of ``folder``'s file system; the filler file, to free it again."""
    filler = folder / "filler"
    block = b"\0" * MB
    with open(filler, "wb", buffering=0) as out:
        while True:
            try:
                out.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                block = block[:len(block) // 2]
                if len(block) < 4096:
                    return filler


class TestFullDisk:
    """ENOSPC mid-operation is ``no_space``: nothing half-written is visible, the temp files go,
    and once there is room the same operation succeeds (a pull resumes from what it had)."""

    def test_full_disk_during_pull(self, tmp_path: Path, small_store: Path,
                                   hostile: Hostile) -> None:
        digest = add_model(hostile, 16 * MB)
        hostile.stall_at = 4 * MB  # every part waits there until released
        name = f"{hostile.host}/library/m"
        with running_daemon(tmp_path, SOCKET_ONLY, TRANSFER_ENV) as daemon:
            _, outcome = run_in_thread(lambda: Client(daemon.socket).call(
                "pull", {"model": name, "insecure": True}))
            wait_until(lambda: recorded(small_store) >= 3 * MB, "a checkpoint of the first MBs")
            filler = fill(small_store)
            hostile.stall_at = None
            hostile.release.set()
            wait_until(lambda: bool(outcome), "the pull to fail")
            failure = outcome[0]
            assert isinstance(failure, RequestFailed), failure
            assert failure.code == "no_space" and "no space left" in str(failure)
            assert list((small_store / "manifests").iterdir()) == []
            assert_store_intact(small_store)
            assert_serving(daemon)
            filler.unlink()
            mark = daemon.log_position
            hostile.served.clear()
            with Client(daemon.socket) as client:
                client.call("pull", {"model": name, "insecure": True})
            daemon.wait_for_log(rf"resuming {digest[7:19]}: \d+ of", start=mark)
            assert hostile.served[digest] <= 16 * MB - 3 * MB + 1  # only what was missing
            assert_store_intact(small_store, allow_partial=False)

    def test_full_disk_during_create(self, tmp_path: Path, small_store: Path,
                                     tiny: Path) -> None:
        too_big = tmp_path / "too-big.gguf"
        too_big.write_bytes(tiny.read_bytes() + os.urandom(STORE_SIZE + 8 * MB))
        with running_daemon(tmp_path, SOCKET_ONLY) as daemon, Client(daemon.socket) as client:
            # The weights do not fit.
            fd = os.open(too_big, os.O_RDONLY)
            try:
                failure = refused(client, "blob", {}, [fd])
            finally:
                os.close(fd)
            assert failure.code == "no_space"
            assert temp_files(small_store) == [] and list((small_store / "blobs").iterdir()) == []
            # They fit, but the layers create writes next do not.
            fd = os.open(tiny, os.O_RDONLY)
            try:
                digest = client.call("blob", {}, files=[fd])["digest"]
            finally:
                os.close(fd)
            filler = fill(small_store)
            request = {"model": "made", "files": {"tiny.gguf": digest},
                       "system": "x" * (2 * MB), "license": "y" * MB}
            failure = refused(client, "create", request)
            assert failure.code == "no_space"
            assert list((small_store / "manifests").iterdir()) == []
            assert temp_files(small_store) == []
            assert_store_intact(small_store)
            filler.unlink()
            client.call("create", request)
            assert [m["name"] for m in client.call("list")["models"]] == ["made:latest"]
            assert_store_intact(small_store, allow_partial=False)
            assert_serving(daemon)

    def test_full_disk_during_import(self, tmp_path: Path, small_store: Path) -> None:
        path = tmp_path / "model.tar"
        path.write_bytes(tar_of(oci_layout(os.urandom(STORE_SIZE + 8 * MB))))
        with running_daemon(tmp_path, SOCKET_ONLY) as daemon:
            fd = os.open(path, os.O_RDONLY)
            try:
                with Client(daemon.socket) as client:
                    failure = refused(client, "import", {}, [fd])
            finally:
                os.close(fd)
            assert failure.code == "no_space"
            assert temp_files(small_store) == [] and list((small_store / "blobs").iterdir()) == []
            path.write_bytes(tar_of(oci_layout(os.urandom(4 * MB))))
            assert call_with_file(daemon, "import", {}, path)["model"] == "hostile:v1"
            assert_store_intact(small_store, allow_partial=False)
            assert_serving(daemon)


# -- a registry that drops the connection or stalls ---------------------------------------------


class TestRegistryFaults:
    """Through the daemon: a registry that cuts every body short, or goes silent, fails the
    pull once its retries are spent; what arrived is kept, and the next pull resumes."""

    @pytest.mark.parametrize("fault", ["drops", "stalls"])
    def test_a_failing_registry_then_a_resumed_pull(self, tmp_path: Path, hostile: Hostile,
                                                    fault: str) -> None:
        size = 12 * MB
        digest = add_model(hostile, size)
        if fault == "drops":
            hostile.truncate_at = 5 * MB
        else:
            hostile.stall_at = 5 * MB
        name = f"{hostile.host}/library/m"
        env = TRANSFER_ENV | {"OLLAMAD_TRANSFER_STALL": "1s"}
        with running_daemon(tmp_path, SOCKET_ONLY, env) as daemon:
            with Client(daemon.socket) as client:
                failure = refused(client, "pull", {"model": name, "insecure": True})
            assert failure.code == "unavailable"
            expected = "part stalled" if fault == "stalls" else "max retries exceeded"
            assert expected in str(failure)
            assert list((daemon.models / "manifests").iterdir()) == []
            assert_store_intact(daemon.models)
            assert_serving(daemon)
            hostile.truncate_at = hostile.stall_at = None
            hostile.release.set()
            hostile.served.clear()
            mark = daemon.log_position
            with Client(daemon.socket) as client:
                client.call("pull", {"model": name, "insecure": True})
            daemon.wait_for_log(rf"resuming {digest[7:19]}: [1-9]\d* of", start=mark)
            assert hostile.served[digest] < size
            assert_store_intact(daemon.models, allow_partial=False)


# -- a client that goes away --------------------------------------------------------------------


def vanish_after(daemon: Daemon, request: bytes, events: int) -> None:
    """Send ``request`` on a raw connection, read ``events`` event frames, and close the socket
    without a cancel frame: a client killed mid-stream."""
    connection = ClientConnection("vanishing")
    sock = daemon.connect()
    try:
        sock.sendall(connection.hello() + request)
        seen = 0
        while seen < events:
            data = sock.recv(65536)
            assert data, "the daemon closed first"
            seen += sum(isinstance(f, Event) for f in connection.receive_data(data))
    finally:
        sock.close()


class TestClientVanishes:
    """A client that dies mid-stream cancels its request and nothing else: a generation frees
    its runner slot, a pull stops and keeps its progress, an import leaves nothing behind."""

    def test_mid_generate(self, model_daemon: Daemon) -> None:
        assert model_daemon.proc is not None
        request = request_frame("generate", 1, {
            "model": "smollm2:135m", "prompt": "Count to 1000.",
            "options": {"num_predict": 4000, "num_ctx": 1024}})
        for _ in range(3):  # more vanished clients than the runner has slots to lose
            vanish_after(model_daemon, request, events=3)
        with Client(model_daemon.socket) as client:
            started = time.monotonic()
            answer = client.call("generate", {"model": "smollm2:135m", "prompt": "Say hi.",
                                              "options": {"num_predict": 8, "num_ctx": 1024}})
            assert answer["done"] and answer["load_duration"] < 1_000_000_000  # not reloaded
            assert time.monotonic() - started < 30  # not queued behind 4000-token ghosts
            assert [m["name"] for m in client.call("ps")["models"]] == ["smollm2:135m"]
        assert len(children(model_daemon.proc.pid)) == 1
        assert "Traceback" not in model_daemon.stderr()
        assert_serving(model_daemon)

    def test_mid_pull(self, tmp_path: Path, hostile: Hostile) -> None:
        size = 12 * MB
        digest = add_model(hostile, size)
        hostile.stall_at = 5 * MB
        name = f"{hostile.host}/library/m"
        with running_daemon(tmp_path, SOCKET_ONLY, TRANSFER_ENV) as daemon:
            request = request_frame("pull", 1, {"model": name, "insecure": True})
            wait_for_bytes = run_in_thread(vanish_after, daemon, request, 4)[0]
            wait_until(lambda: hostile.served.get(digest, 0) >= 5 * MB, "the first 5 MB")
            wait_for_bytes.join(WAIT)
            # The download stops with its last waiter and writes down what it has.
            wait_until(lambda: recorded(daemon.models) >= 4 * MB, "the part states")
            hostile.stall_at = None
            hostile.release.set()
            assert_store_intact(daemon.models)
            hostile.served.clear()
            with Client(daemon.socket) as client:
                client.call("pull", {"model": name, "insecure": True})
            assert hostile.served[digest] <= size - 4 * MB + 1
            assert_store_intact(daemon.models, allow_partial=False)
            assert_serving(daemon)

    def test_mid_import(self, tmp_path: Path) -> None:
        archive = tar_of(oci_layout(os.urandom(8 * MB)))
        with running_daemon(tmp_path, SOCKET_ONLY) as daemon, feeder() as pipe:
            outcome = pipe.start(daemon, "import", {})
            pipe.write(archive[:len(archive) // 2])
            wait_until(lambda: largest_temp(daemon.models) >= 2 * MB, "a staged blob")
            pipe.close()  # the client's end of the file goes with the client
            wait_until(lambda: bool(outcome), "the import to end")
            assert isinstance(outcome[0], RequestFailed) and outcome[0].code == "bad_request"
            assert "truncated" in str(outcome[0]) or "not a readable tar" in str(outcome[0])
            assert list((daemon.models / "blobs").iterdir()) == []  # the staged temp is gone
            assert list((daemon.models / "manifests").iterdir()) == []
            assert_serving(daemon)


def wait_for_poll(fd: int, event: int, what: str) -> None:
    """Wait for ``event`` on ``fd``: POLLHUP on a pipe's read end or POLLERR on its write end
    says the daemon has closed every copy it had of the other end."""
    poller = select.poll()
    poller.register(fd, event)
    assert poller.poll(WAIT * 1000), f"timed out waiting for {what}"


class TestPassedPipeLeftOpen:
    """A client passes a pipe and then neither writes, closes nor reads it, and goes: its request
    ends and lets go of the pipe (and of the worker thread that was waiting on it), though the
    pipe's other end stays open in the test."""

    def _send_and_vanish(self, daemon: Daemon, op: str, args: dict[str, Any], fd: int,
                         started: Callable[[], bool]) -> None:
        frame = request_frame(op, 1, {**args, "fds": 1})
        sock = daemon.connect()
        try:
            sock.sendall(ClientConnection("vanishing").hello())
            socket.send_fds(sock, [frame[:1]], [fd])
            sock.sendall(frame[1:])
            wait_until(started, f"the {op} to start waiting on the pipe")
        finally:
            sock.close()
        os.close(fd)

    def test_a_blob_from_a_pipe_never_written(self, tmp_path: Path) -> None:
        read_fd, write_fd = os.pipe()
        try:
            with running_daemon(tmp_path, SOCKET_ONLY) as daemon:
                self._send_and_vanish(daemon, "blob", {}, read_fd,
                                      lambda: bool(temp_files(daemon.models)))
                wait_for_poll(write_fd, select.POLLERR, "the daemon to close the pipe")
                wait_until(lambda: not temp_files(daemon.models), "the temp blob to go")
                assert_serving(daemon)
        finally:
            os.close(write_fd)

    def test_an_export_into_a_pipe_never_read(self, tmp_path: Path, tiny: Path) -> None:
        big = tmp_path / "big.gguf"
        big.write_bytes(tiny.read_bytes() + os.urandom(MB))  # more than a pipe holds
        read_fd, write_fd = os.pipe()
        try:
            with running_daemon(tmp_path, SOCKET_ONLY) as daemon:
                digest = call_with_file(daemon, "blob", {}, big)["digest"]
                with Client(daemon.socket) as client:
                    client.call("create", {"model": "made", "files": {"big.gguf": digest}})
                poller = select.poll()
                poller.register(read_fd, select.POLLIN)
                self._send_and_vanish(daemon, "export", {"model": "made"}, write_fd,
                                      lambda: bool(poller.poll(0)))
                wait_for_poll(read_fd, select.POLLHUP, "the daemon to close the pipe")
                assert_serving(daemon)
        finally:
            os.close(read_fd)


# -- the soak run, in its short form --------------------------------------------------------------


@pytest.mark.slow
def test_soak_for_two_minutes(tmp_path: Path, smollm2_gguf: Path) -> None:
    """bench/soak.py for two minutes: mixed load, then flat RSS and descriptors, every request
    answered once, the store verified (the run's own assertions; its exit status here)."""
    result = subprocess.run([sys.executable, "-m", "bench.soak", "--minutes", "2",
                             "--work-dir", str(tmp_path)], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "soak: passed" in result.stdout
