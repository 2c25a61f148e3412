"""The runner child's server: the daemon's requests in, events out, over one inherited socket.

The main thread reads frames and answers what is quick (hello, health, tokenize, detokenize,
turning completion and embed requests into queued jobs). One decode thread loads the model and
then runs the batching loop; it owns the llama context. Both write frames, under one lock.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ollamad import __version__
from ollamad.errors import BadRequest, Unavailable, classify
from ollamad.protocol import (
    Cancel,
    ClientFrame,
    ErrorCode,
    Hello,
    ProtocolError,
    Request,
    ServerConnection,
)
from ollamad.runner.engine import Engine
from ollamad.runner.jobs import completion_job, embedding_job
from ollamad.runner.llama import LlamaLog, LoadError, LoadParams, Model

log = logging.getLogger(__name__)

RECEIVE_SIZE = 64 * 1024
OPERATIONS = ("load", "health", "completion", "embed", "tokenize", "detokenize")
# Progress events are sent when the value has moved by this much: llama.cpp reports per tensor.
PROGRESS_STEP = 0.01


class Channel:
    """The socket to the daemon and its protocol state, shared by both threads."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._protocol = ServerConnection(f"ollamad-runner/{__version__}", OPERATIONS)
        self._lock = threading.Lock()

    def receive(self) -> list[ClientFrame] | None:
        """The next frames; None once the daemon has closed the connection."""
        try:
            data = self._sock.recv(RECEIVE_SIZE)
        except ConnectionError:
            return None
        if not data:
            return None
        with self._lock:
            return self._protocol.receive_data(data)

    def hello(self) -> None:
        self._write(self._protocol.hello)

    def event(self, request_id: int, data: dict[str, Any]) -> None:
        self._write(lambda: self._protocol.event(request_id, data))

    def done(self, request_id: int) -> None:
        self._write(lambda: self._protocol.done(request_id))

    def error(self, request_id: int | None, code: str, message: str) -> None:
        self._write(lambda: self._protocol.error(request_id, code, message))

    def fail(self, request_id: int, exc: BaseException) -> None:
        code, message = classify(exc)
        if code == ErrorCode.INTERNAL:
            log.error("request %d failed", request_id, exc_info=exc)
        self.error(request_id, code, message)

    def _write(self, frame: Callable[[], bytes]) -> None:
        with self._lock:
            try:
                self._sock.sendall(frame())
            except OSError as exc:
                # The daemon is gone; the reader sees the end of the stream and exits.
                log.debug("cannot write to the daemon: %s", exc)


class RunnerServer:
    def __init__(self, channel: Channel, llama_log: LlamaLog) -> None:
        self.channel = channel
        self.llama_log = llama_log
        self.params: LoadParams | None = None
        self.model: Model | None = None
        self.engine: Engine | None = None
        self.progress = 0.0
        self.load_error: str | None = None
        self._handlers: dict[str, Callable[[int, Mapping[str, Any]], None]] = {
            "load": self._load,
            "health": self._health,
            "completion": self._completion,
            "embed": self._embed,
            "tokenize": self._tokenize,
            "detokenize": self._detokenize,
        }

    def serve(self) -> None:
        """Answer frames until the daemon closes the connection."""
        while True:
            try:
                frames = self.channel.receive()
            except ProtocolError as exc:
                log.error("closing the connection: %s", exc.message)
                self.channel.error(None, ErrorCode.PROTOCOL, exc.message)
                return
            if frames is None:
                return
            for frame in frames:
                self._dispatch(frame)

    def _dispatch(self, frame: ClientFrame) -> None:
        if isinstance(frame, Hello):
            self.channel.hello()
        elif isinstance(frame, Cancel):
            job = self.engine.cancel(frame.id) if self.engine is not None else None
            if job is not None:
                job.release()
                self.channel.error(frame.id, ErrorCode.CANCELLED, "request cancelled")
        elif isinstance(frame, Request):
            handler = self._handlers.get(frame.op)
            try:
                if handler is None:
                    raise BadRequest(f"unknown runner operation {frame.op!r}")
                handler(frame.id, frame.args)
            except Exception as exc:
                self.channel.fail(frame.id, exc)

    def _ready(self) -> tuple[Model, Engine]:
        if self.model is None or self.engine is None:
            raise Unavailable("the runner has not loaded its model")
        return self.model, self.engine

    def _load(self, request_id: int, args: Mapping[str, Any]) -> None:
        if self.params is not None:
            raise BadRequest("this runner has loaded its model already; start another runner")
        params = self.params = LoadParams.from_args(args)
        threading.Thread(target=self._load_and_run, args=(request_id, params), name="decode",
                         daemon=True).start()

    def _load_and_run(self, request_id: int, params: LoadParams) -> None:
        try:
            log.info("loading %s: slots %d, tokens per slot %d, threads %d", params.model,
                     params.parallel, params.num_ctx, params.threads)
            try:
                model = Model.load(params, self.llama_log,
                                   lambda value: self._report_progress(request_id, value))
            except LoadError as exc:
                self.load_error = str(exc)
                log.error("%s", exc)
                self.channel.error(request_id, ErrorCode.INTERNAL, str(exc))
                return
            engine = Engine(model, self.channel)
            self.model, self.engine = model, engine
            self.channel.event(request_id, {"status": "ready", **model.info()})
            self.channel.done(request_id)
            engine.run()
        except BaseException:
            # Requests would wait forever on a dead decode thread: end the process instead, so
            # the daemon sees it terminate (with this traceback as its last words).
            log.critical("the decode thread failed", exc_info=True)
            os._exit(1)

    def _report_progress(self, request_id: int, value: float) -> None:
        if value >= 1.0 or value - self.progress >= PROGRESS_STEP:
            self.progress = value
            self.channel.event(request_id, {"progress": value})

    def _health(self, request_id: int, args: Mapping[str, Any]) -> None:
        if self.engine is not None:
            health = {"status": "ready", "progress": 1.0, **self.engine.load()}
        elif self.load_error is not None:
            health = {"status": "error", "progress": self.progress, "error": self.load_error}
        else:
            health = {"status": "loading", "progress": self.progress, "busy": 0}
        slots = self.params.parallel if self.params is not None else 0
        self.channel.event(request_id, {"slots": slots, **health})
        self.channel.done(request_id)

    def _completion(self, request_id: int, args: Mapping[str, Any]) -> None:
        model, engine = self._ready()
        engine.submit(completion_job(model, request_id, args))

    def _embed(self, request_id: int, args: Mapping[str, Any]) -> None:
        model, engine = self._ready()
        engine.submit(embedding_job(model, request_id, args))

    def _tokenize(self, request_id: int, args: Mapping[str, Any]) -> None:
        model, _ = self._ready()
        content = args.get("content")
        if not isinstance(content, str):
            raise BadRequest("tokenize needs a content string")
        tokens = model.tokenize(content, add_special=bool(args.get("add_special", False)),
                                parse_special=bool(args.get("parse_special", True)))
        self.channel.event(request_id, {"tokens": tokens})
        self.channel.done(request_id)

    def _detokenize(self, request_id: int, args: Mapping[str, Any]) -> None:
        model, _ = self._ready()
        tokens = args.get("tokens")
        if not isinstance(tokens, list):
            raise BadRequest("detokenize needs a tokens list")
        self.channel.event(request_id, {"content": model.detokenize(tokens)})
        self.channel.done(request_id)


def serve(sock: socket.socket, verbose: bool) -> None:
    """Serve the daemon on ``sock`` until it closes the connection."""
    RunnerServer(Channel(sock), LlamaLog(verbose)).serve()
