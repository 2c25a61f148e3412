"""The operations, the one place both transports (Unix socket and HTTP) call.

Each operation is an async generator of events (dicts shaped like Ollama's HTTP JSON bodies). A
one-shot operation yields exactly one event; a streaming one yields progress or tokens. Failures
are raised as :mod:`ollamad.errors` exceptions. Store work runs in worker threads so that one slow
disk never stalls the event loop.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import trio

from ollamad import __version__, model_info, passed_files
from ollamad import create as creating
from ollamad.errors import BadRequest, CorruptStore, InvalidName, NotFound
from ollamad.inference import Inference
from ollamad.store import Digest, ModelName, ModelStore

log = logging.getLogger(__name__)

Args = dict[str, Any]
Events = AsyncIterator[dict[str, Any]]


@dataclass(frozen=True)
class Caller:
    """Who asked: peer credentials for the Unix socket, the address for HTTP."""

    transport: str
    uid: int | None = None
    gid: int | None = None
    pid: int | None = None
    address: str | None = None

    def __str__(self) -> str:
        if self.address is not None:
            return f"{self.transport} {self.address}"
        if self.uid is None:
            return self.transport
        return f"{self.transport} uid={self.uid} gid={self.gid} pid={self.pid}"


@dataclass(frozen=True)
class Call:
    """One invocation of an operation: who asked, and the files they passed (open fds).

    The daemon never opens a path a client names: a client that wants the daemon to read a file
    opens it itself and passes the descriptor, so the daemon reads only what the caller could.
    """

    caller: Caller
    files: tuple[int, ...] = ()
    # Raw content streamed by a transport that has no descriptors to pass (HTTP's blob upload).
    body: AsyncIterator[bytes] | None = None


Operation = Callable[["Service", Args, Call], Events]
OPERATIONS: dict[str, Operation] = {}


def operation(name: str) -> Callable[[Operation], Operation]:
    def register(func: Operation) -> Operation:
        OPERATIONS[name] = func
        return func
    return register


def _string(args: Args, key: str, default: str | None = None) -> str:
    value = args.get(key, default)
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value


def _model_arg(args: Args) -> ModelName:
    """The ``model`` argument (or Ollama's deprecated ``name``), parsed."""
    raw = args.get("model") or args.get("name")
    if not raw:
        raise BadRequest("model is required")
    if not isinstance(raw, str):
        raise BadRequest("model must be a string")
    return ModelName.parse(raw)


class Service:
    def __init__(self, store: ModelStore, inference: Inference) -> None:
        self.store = store
        self.inference = inference

    def run(self, op: str, args: Args, caller: Caller, files: list[int] | None = None,
            body: AsyncIterator[bytes] | None = None) -> Events:
        """The event stream of operation ``op``; BadRequest if there is no such operation."""
        try:
            handler = OPERATIONS[op]
        except KeyError:
            raise BadRequest(f"unknown operation {op!r}") from None
        return handler(self, args, Call(caller, tuple(files or ()), body))

    async def _in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        # abandon_on_cancel=False: a store write, once started, finishes; it is atomic anyway.
        return await trio.to_thread.run_sync(functools.partial(func, *args))


@operation("version")
async def version(service: Service, args: Args, call: Call) -> Events:
    yield {"version": __version__}


@operation("list")
async def list_models(service: Service, args: Args, call: Call) -> Events:
    def entries() -> list[dict[str, Any]]:
        models = sorted(service.store.models(), key=lambda m: m.mtime_ns, reverse=True)
        found = []
        for stored in models:
            try:
                found.append(model_info.list_entry(service.store, stored))
            except CorruptStore as exc:
                # As Ollama does: one damaged model must not hide the others.
                log.warning("not listing %s: %s", stored.name, exc.message)
        return found

    yield {"models": await service._in_thread(entries)}


@operation("show")
async def show(service: Service, args: Args, call: Call) -> Events:
    name = _model_arg(args)
    options = args.get("options") or {}
    if not isinstance(options, dict):
        raise BadRequest("options must be an object")
    system = _string(args, "system", "")
    verbose = bool(args.get("verbose", False))

    def build() -> dict[str, Any]:
        stored = service.store.get(name)
        return model_info.show(service.store, stored, verbose=verbose, system=system,
                               options=options)

    yield await service._in_thread(build)


@operation("copy")
async def copy(service: Service, args: Args, call: Call) -> Events:
    raw_source, raw_destination = _string(args, "source", ""), _string(args, "destination", "")
    try:
        source = ModelName.parse(raw_source)
    except InvalidName:
        raise BadRequest(f'source "{raw_source}" is invalid') from None
    try:
        destination = ModelName.parse(raw_destination)
    except InvalidName:
        raise BadRequest(f'destination "{raw_destination}" is invalid') from None
    try:
        written = await service._in_thread(service.store.copy, source, destination)
    except NotFound:
        raise NotFound(f'model "{raw_source}" not found') from None
    log.info("copied %s to %s for %s", source, written, call.caller)
    yield {}


@operation("delete")
async def delete(service: Service, args: Args, call: Call) -> Events:
    name = _model_arg(args)
    stored = await service._in_thread(service.store.delete, name)
    log.info("deleted %s for %s", stored.name, call.caller)
    yield {}


@operation("generate")
def generate(service: Service, args: Args, call: Call) -> Events:
    return service.inference.generate(args)


@operation("chat")
def chat(service: Service, args: Args, call: Call) -> Events:
    return service.inference.chat(args)


@operation("embed")
def embed(service: Service, args: Args, call: Call) -> Events:
    return service.inference.embed(args)


@operation("embeddings")
def embeddings(service: Service, args: Args, call: Call) -> Events:
    return service.inference.embeddings(args)


@operation("ps")
async def ps(service: Service, args: Args, call: Call) -> Events:
    yield service.inference.ps()


@operation("stop")
async def stop(service: Service, args: Args, call: Call) -> Events:
    await service.inference.stop(args)
    yield {}


@operation("create")
async def create(service: Service, args: Args, call: Call) -> Events:
    async for event in creating.run(service.store, args):
        yield event
    log.info("created %s for %s", args.get("model") or args.get("name"), call.caller)


@operation("save")
async def save(service: Service, args: Args, call: Call) -> Events:
    """``/save`` in the REPL: a new model from the current one plus the conversation so far."""
    if not args.get("from"):
        raise BadRequest("from is required")
    async for event in create(service, args, call):
        yield event


@operation("blob")
async def blob(service: Service, args: Args, call: Call) -> Events:
    """Store a blob from the one file the caller passed, or from a streamed body; answer its
    digest, size and whether it was new.

    A named ``digest`` already in the store is not read again (HTTP answers 200 rather than 201);
    with neither a file nor a body only that look-up is done, and an absent blob is NotFound.
    """
    expected = Digest.parse(args["digest"]) if args.get("digest") else None
    if expected is not None:
        try:
            size = await service._in_thread(service.store.blobs.size, expected)
        except NotFound:
            if call.body is None and not call.files:
                raise NotFound(f'blob "{args["digest"]}" not found') from None
        else:
            yield {"digest": str(expected), "size": size, "created": False}
            return
    if call.body is not None:
        chunks = _from_async(call.body)
    elif len(call.files) == 1:
        chunks = passed_files.chunks(call.files[0], trio.from_thread.check_cancelled)
    else:
        raise BadRequest("blob takes exactly one passed file descriptor")
    digest, size = await service._in_thread(service.store.blobs.write, chunks, expected)
    log.info("stored blob %s (%d bytes) for %s", digest, size, call.caller)
    yield {"digest": str(digest), "size": size, "created": True}


def _from_async(body: AsyncIterator[bytes]) -> Iterator[bytes]:
    """Pull an async byte stream from the worker thread that writes the blob."""
    while True:
        try:
            chunk = trio.from_thread.run(body.__anext__)
        except StopAsyncIteration:
            return
        if chunk:
            yield chunk


# -- registry and archives (the logic lives in ollamad.registry, imported when first used) -----


def _one_file(call: Call, op: str) -> int:
    if len(call.files) != 1:
        raise BadRequest(f"{op} takes exactly one passed file descriptor")
    return call.files[0]


@operation("pull")
async def pull(service: Service, args: Args, call: Call) -> Events:
    from ollamad import registry
    from ollamad.config import env_bool

    name = _model_arg(args)
    async for event in registry.pull(service.store, registry.for_store(service.store), name,
                                     bool(args.get("insecure")),
                                     prune=not env_bool(os.environ, "OLLAMA_NOPRUNE")):
        yield event
    log.info("pulled %s for %s", name, call.caller)


@operation("push")
async def push(service: Service, args: Args, call: Call) -> Events:
    from ollamad import registry

    name = _model_arg(args)
    async for event in registry.push(service.store, registry.for_store(service.store), name,
                                     bool(args.get("insecure"))):
        yield event
    log.info("pushed %s for %s", name, call.caller)


@operation("key")
async def key(service: Service, args: Args, call: Call) -> Events:
    """The public key registries know this daemon by (``ollamactl key``)."""
    from ollamad import identity

    loaded = await service._in_thread(identity.load_or_create, service.store.root.parent)
    yield {"key": loaded.public_key}


@operation("export")
async def export(service: Service, args: Args, call: Call) -> Events:
    """Write a model as an OCI image-layout tar to the one file the caller passed."""
    from ollamad import registry

    name, fd = _model_arg(args), _one_file(call, "export")
    async for event in registry.export(service.store, name, fd):
        yield event
    log.info("exported %s for %s", name, call.caller)


@operation("import")
async def import_(service: Service, args: Args, call: Call) -> Events:
    """Add the model of an OCI image-layout tar read from the one file the caller passed."""
    from ollamad import registry

    fd = _one_file(call, "import")
    name = _model_arg(args) if args.get("model") or args.get("name") else None
    async for event in registry.import_archive(service.store, fd, name):
        yield event
    log.info("imported %s for %s", event.get("model"), call.caller)
