"""The daemon's entry: sockets (systemd's or our own), sd_notify, signals, idle exit."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

import trio

from ollamad import __version__, identity
from ollamad.activity import Activity
from ollamad.config import Settings
from ollamad.http.launch import Launcher, LaunchError
from ollamad.inference import Inference
from ollamad.inference import Settings as InferenceSettings
from ollamad.ipc import IPCServer
from ollamad.scheduler import Scheduler
from ollamad.service import Service
from ollamad.store import ModelStore
from ollamad.systemd import CTL, HTTP, Notifier, listen_sockets

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class ServeOptions:
    socket_path: Path
    idle_exit: float | None = None
    shutdown_timeout: float = 30.0
    # The HTTP bridge's address (OLLAMA_HOST's syntax) or "none"; None: $OLLAMA_HOST, else
    # 127.0.0.1:11434.
    http: str | None = None


def bind_unix(path: Path) -> socket.socket:
    """Listen on ``path`` (mode 0660), replacing a stale socket but never a live one."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise StartupError(f"{path} exists and is not a socket; not replacing it")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                path.unlink()
            else:
                raise StartupError(f"another daemon is already serving on {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask makes the socket 0660 from its first moment, with no window at a wider mode.
    old_umask = os.umask(0o117)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def open_store(settings: Settings) -> ModelStore:
    store = ModelStore(settings.models)
    store.create_folders()
    store.fix_legacy_blob_names()
    if not settings.noprune:
        removed = store.prune()
        if removed:
            log.info("pruned %d unreferenced blobs", removed)
    return store


async def serve(settings: Settings, options: ServeOptions) -> None:
    notifier = Notifier()
    passed = listen_sockets()
    store = await trio.to_thread.run_sync(open_store, settings)
    await trio.to_thread.run_sync(identity.load_or_create, settings.identity_dir)

    try:
        http = Launcher.open(passed.get(HTTP), options.http, options.shutdown_timeout)
    except LaunchError as exc:
        raise StartupError(str(exc)) from None
    ctl = passed.get(CTL)
    bound: Path | None = None
    if ctl is None:
        try:
            ctl = bind_unix(options.socket_path)
        except BaseException:
            http.close()
            raise
        bound = options.socket_path
    where = bound or ctl.getsockname() or "a socket passed by systemd"
    http_status = f", HTTP on {http.where}" if http.where else ""

    activity = Activity()
    scheduler = Scheduler(activity, default_keep_alive=settings.keep_alive,
                          max_loaded=settings.max_loaded_models, max_queue=settings.max_queue)
    inference = Inference(store, scheduler, InferenceSettings(
        settings.keep_alive, settings.context_length, settings.num_parallel,
        settings.flash_attention))
    service = Service(store, inference)
    ipc = IPCServer(service, activity, settings.max_frame_size)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.run)
            nursery.start_soon(ipc.serve, trio.SocketListener(trio.socket.from_stdlib_socket(ctl)))
            if notifier.watchdog_interval:
                nursery.start_soon(_watchdog, notifier, notifier.watchdog_interval)
            stop = trio.Event()
            await nursery.start(_on_signals, stop)
            if options.idle_exit is not None:
                nursery.start_soon(_idle_exit, activity, options.idle_exit, stop)
            log.info("ollamad %s serving on %s%s, store %s", __version__, where, http_status,
                     settings.models)
            notifier.notify("READY=1", f"STATUS=serving on {where}{http_status}")
            # Started after READY: the bridge's imports cost more than the rest of start-up, and
            # HTTP clients meanwhile wait in the listen backlog.
            nursery.start_soon(http.run, service, activity)
            await stop.wait()
            notifier.notify("STOPPING=1", "STATUS=stopping")
            http.stop()
            ipc.stop_accepting()
            ipc.drain()
            with trio.move_on_after(options.shutdown_timeout):
                # A loaded model keeps the daemon busy for --idle-exit, but must not hold up a
                # stop until the timeout: each goes once its requests end, as `ollamactl stop`.
                for loaded in scheduler.ps():
                    await scheduler.expire(loaded.ref.path)
                await activity.wait_idle(0)
            nursery.cancel_scope.cancel()
    finally:
        http.close()
        if bound is not None:
            with contextlib.suppress(FileNotFoundError):
                bound.unlink()
    log.info("ollamad stopped")


async def _watchdog(notifier: Notifier, interval: float) -> None:
    # Sent from the event loop, so a stalled loop stops the pings and systemd restarts us.
    while True:
        notifier.notify("WATCHDOG=1")
        await trio.sleep(interval)


async def _on_signals(stop: trio.Event,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            log.info("%s received: finishing in-flight requests", signal.Signals(signum).name)
            stop.set()
            return


async def _idle_exit(activity: Activity, seconds: float, stop: trio.Event) -> None:
    await activity.wait_idle(seconds)
    log.info("idle for %gs: exiting", seconds)
    stop.set()
