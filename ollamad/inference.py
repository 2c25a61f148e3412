"""generate, chat and embed: requests checked and mapped onto a runner, answers in Ollama's shape.

Transport-free: the operations in service.py call these, and both the Unix socket and the HTTP
bridge go through service.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import trio

from ollamad import gojson, model_info, options, prompting
from ollamad.durations import parse_keep_alive
from ollamad.errors import BadRequest, InvalidName, NotFound
from ollamad.model import Model
from ollamad.runner.handle import LoadOptions
from ollamad.scheduler import Loaded, ModelRef, Scheduler, available_memory
from ollamad.store import ModelName, ModelStore

log = logging.getLogger(__name__)

Args = dict[str, Any]
Events = AsyncIterator[dict[str, Any]]
AUTO_PARALLEL = 4


def now() -> str:
    return gojson.format_time(time.time_ns(), utc=True)


@dataclass(frozen=True)
class Settings:
    keep_alive: float
    context_length: int
    num_parallel: int
    flash_attention: bool | None = None


class Inference:
    def __init__(self, store: ModelStore, scheduler: Scheduler, settings: Settings) -> None:
        self.store = store
        self.scheduler = scheduler
        self.settings = settings
        self._models: dict[str, Model] = {}

    # -- shared steps ---------------------------------------------------------------------------

    async def model(self, args: Args) -> tuple[str, Model]:
        """The request's model name as sent, and the model (404 in Ollama's words if absent)."""
        requested = args.get("model") or args.get("name")
        if not requested:
            raise BadRequest("model is required")
        if not isinstance(requested, str):
            raise BadRequest("model must be a string")
        try:
            name = ModelName.parse(requested)
        except InvalidName:
            raise NotFound(f"model '{requested}' not found") from None

        def load() -> Model:
            try:
                stored = self.store.get(name)
            except NotFound:
                raise NotFound(f"model '{requested}' not found") from None
            key = stored.digest.hex
            if key not in self._models:
                self._models[key] = Model.load(self.store, stored)
            return self._models[key]

        return requested, await trio.to_thread.run_sync(load)

    def effective_options(self, model: Model, args: Args) -> dict[str, Any]:
        return (options.defaults(self.settings.context_length)
                | options.from_map(model.layers.options) | options.from_map(args.get("options")))

    def load_options(self, model: Model, opts: dict[str, Any], embedding: bool = False
                     ) -> LoadOptions:
        num_ctx = max(opts["num_ctx"], 4)
        if model.context_length:
            num_ctx = min(num_ctx, model.context_length)
        return LoadOptions(
            num_ctx=num_ctx,
            num_batch=opts["num_batch"],
            num_thread=opts["num_thread"] or None,
            use_mmap=opts.get("use_mmap", True),
            parallel=1 if embedding else self.parallel(model, num_ctx),
            flash_attn=self.settings.flash_attention,
        )

    def parallel(self, model: Model, num_ctx: int) -> int:
        """Slots per runner: ``OLLAMA_NUM_PARALLEL``, else 4 when their KV caches fit.

        On a CPU, sequences that share each decode step cost little extra time per step, so four
        concurrent streams get about 1.4x the tokens per second of one (measured on 2 cores); a
        single request is no slower. Four slots cost four contexts of KV cache, so a model for
        which that does not fit in free memory gets one slot, as Ollama's automatic choice does.
        """
        if self.settings.num_parallel > 0:
            return self.settings.num_parallel
        fits = model.memory_estimate(num_ctx * AUTO_PARALLEL) <= 0.8 * available_memory()
        return AUTO_PARALLEL if fits else 1

    def plan(self, model: Model, args: Args, requested: str, op: str, needs: str | None
             ) -> tuple[bool | str | None, str | dict[str, Any] | None, dict[str, Any],
                        LoadOptions]:
        """What a generate or chat needs before it runs: the capabilities checked, and its
        think setting, format, options and load options."""
        caps = model.capabilities
        if "completion" not in caps:
            raise BadRequest(f'"{requested}" does not support {op}')
        if needs and needs not in caps:
            raise BadRequest(f"{model.stored.name} does not support {needs}")
        opts = self.effective_options(model, args)
        return (_think(args, requested, caps), format_arg(args), opts,
                self.load_options(model, opts))

    @contextlib.asynccontextmanager
    async def runner(self, model: Model, load: LoadOptions, args: Args) -> AsyncIterator[Loaded]:
        if model.weights is None:
            raise BadRequest(f"{model.stored.name.display_shortest()} has no weights to run")
        keep_alive = keep_alive_arg(args)
        ref = ModelRef(model.weights, model.stored.name.display_shortest(),
                       model.stored.digest.hex, {},
                       model.memory_estimate(load.num_ctx * load.parallel))
        async with self.scheduler.use(ref, load, keep_alive) as loaded:
            yield loaded

    # -- generate -------------------------------------------------------------------------------

    async def generate(self, args: Args) -> Events:
        started = time.perf_counter_ns()
        requested, model = await self.model(args)
        prompt = _text(args, "prompt")
        keep_alive = keep_alive_arg(args)
        if not prompt and keep_alive == 0:
            await self._unload(model)
            yield {"model": requested, "created_at": now(), "response": "", "done": True,
                   "done_reason": "unload"}
            return
        raw = bool(args.get("raw"))
        system, template, suffix = (_text(args, "system"), _text(args, "template"),
                                    _text(args, "suffix"))
        context = args.get("context")
        if raw and (template or system or context):
            raise BadRequest("raw mode does not support template, system, or context")
        if context is not None and (not isinstance(context, list)
                                    or not all(isinstance(t, int) for t in context)):
            raise BadRequest("context must be a list of token ids")
        think, fmt, opts, load = self.plan(model, args, requested, "generate",
                                           "insert" if suffix else None)
        async with self.runner(model, load, args) as loaded:
            load_duration = time.perf_counter_ns() - started
            if not prompt:
                yield {"model": requested, "created_at": now(), "response": "", "done": True,
                       "done_reason": "load"}
                return
            assert loaded.runner is not None
            if not raw:
                rendered = prompting.render_generate(
                    model, prompt=prompt, system=system, template=template, suffix=suffix,
                    think=think, with_history=context is None)
                if context:
                    rendered = await loaded.runner.detokenize(context) + rendered
                prompt = rendered
            if args.get("_debug_render_only"):
                yield {"model": requested, "created_at": now(), "response": "", "done": True,
                       "_debug_info": {"rendered_template": prompt}}
                return
            request = {"prompt": prompt, "options": _runtime(opts, load), "format": fmt,
                       "return_context": not raw}
            async for event in loaded.runner.completion(request):
                if event.get("content"):
                    yield {"model": requested, "created_at": now(), "response": event["content"],
                           "done": False}
                if event.get("done"):
                    final = {"model": requested, "created_at": now(), "response": "",
                             "done": True, "done_reason": event["done_reason"]}
                    if not raw and "context" in event:
                        final["context"] = event["context"]
                    yield final | _metrics(event, started, load_duration)

    # -- chat -----------------------------------------------------------------------------------

    async def chat(self, args: Args) -> Events:
        started = time.perf_counter_ns()
        requested, model = await self.model(args)
        messages = messages_arg(args)
        keep_alive = keep_alive_arg(args)
        empty_reply = {"role": "assistant", "content": ""}
        if not messages and keep_alive == 0:
            await self._unload(model)
            yield {"model": requested, "created_at": now(), "message": empty_reply,
                   "done": True, "done_reason": "unload"}
            return
        tools = args.get("tools") or []
        if not isinstance(tools, list):
            raise BadRequest("tools must be a list")
        think, fmt, opts, load = self.plan(model, args, requested, "chat",
                                           "tools" if tools else None)
        async with self.runner(model, load, args) as loaded:
            load_duration = time.perf_counter_ns() - started
            if not messages:
                yield {"model": requested, "created_at": now(), "message": empty_reply,
                       "done": True, "done_reason": "load"}
                return
            assert loaded.runner is not None
            history = prompting.with_model_history(model, messages)
            truncate = args.get("truncate", True) is not False
            prompt = await prompting.fit_chat(model, history, tools, think, loaded.runner,
                                              load.num_ctx if truncate else math.inf)
            if args.get("_debug_render_only"):
                yield {"model": requested, "created_at": now(), "message": empty_reply,
                       "done": True, "_debug_info": {"rendered_template": prompt}}
                return
            parser = prompting.ToolCallParser(model, tools) if tools else None
            request = {"prompt": prompt, "options": _runtime(opts, load), "format": fmt}
            async for event in loaded.runner.completion(request):
                piece = event.get("content", "")
                calls: list[dict[str, Any]] = []
                if parser is not None:
                    piece, calls = parser.feed(piece, final=bool(event.get("done")))
                if piece or calls:
                    message: dict[str, Any] = {"role": "assistant", "content": piece}
                    if calls:
                        message["tool_calls"] = calls
                    yield {"model": requested, "created_at": now(), "message": message,
                           "done": False}
                if event.get("done"):
                    yield ({"model": requested, "created_at": now(), "message": empty_reply,
                            "done": True, "done_reason": event["done_reason"]}
                           | _metrics(event, started, load_duration))

    # -- embed ----------------------------------------------------------------------------------

    async def embed(self, args: Args) -> Events:
        started = time.perf_counter_ns()
        requested, model = await self.model(args)
        raw_input = args.get("input")
        if raw_input is None or raw_input == "":
            inputs: list[str] = []
        elif isinstance(raw_input, str):
            inputs = [raw_input]
        elif isinstance(raw_input, list) and all(isinstance(item, str) for item in raw_input):
            inputs = raw_input
        else:
            raise BadRequest("invalid input type")
        dimensions = args.get("dimensions") or 0
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 0:
            raise BadRequest("dimensions must be a non-negative integer")
        truncate = args.get("truncate", True) is not False
        opts = self.effective_options(model, args)
        load = self.load_options(model, opts, embedding="embedding" in model.capabilities)
        async with self.runner(model, load, args) as loaded:
            load_duration = time.perf_counter_ns() - started
            assert loaded.runner is not None
            results: list[dict[str, Any]] = [{}] * len(inputs)

            async def one(index: int, text: str) -> None:
                assert loaded.runner is not None
                results[index] = await loaded.runner.embed(text, truncate)

            async with trio.open_nursery() as nursery:
                for index, text in enumerate(inputs):
                    nursery.start_soon(one, index, text)
        embeddings = [normalise(result["embedding"], dimensions) for result in results]
        response: dict[str, Any] = {"model": requested, "embeddings": embeddings}
        if inputs:
            response["total_duration"] = time.perf_counter_ns() - started
            response["load_duration"] = load_duration
            response["prompt_eval_count"] = sum(r.get("prompt_eval_count", 0) for r in results)
        yield response

    async def embeddings(self, args: Args) -> Events:
        """The legacy single embedding: ``prompt`` in, an unnormalised ``embedding`` out."""
        _, model = await self.model(args)
        prompt = _text(args, "prompt")
        opts = self.effective_options(model, args)
        load = self.load_options(model, opts, embedding="embedding" in model.capabilities)
        async with self.runner(model, load, args) as loaded:
            if not prompt:
                yield {"embedding": []}
                return
            assert loaded.runner is not None
            result = await loaded.runner.embed(prompt, True)
        yield {"embedding": result["embedding"]}

    # -- ps and stop ----------------------------------------------------------------------------

    def ps(self) -> dict[str, Any]:
        models = []
        for loaded in self.scheduler.ps():
            model = next((m for m in self._models.values() if m.weights == loaded.ref.path),
                         None)
            details = {} if model is None else model_info.running_details(model)
            expires = loaded.expires_at if math.isfinite(loaded.expires_at) else FOREVER_AT
            models.append({
                "name": loaded.ref.name, "model": loaded.ref.name, "size": loaded.ref.memory,
                "digest": loaded.ref.digest, "details": details,
                "expires_at": gojson.format_time(int(expires * 1e9)),
                "size_vram": 0, "context_length": loaded.options.num_ctx,
            })
        return {"models": models}

    async def stop(self, args: Args) -> None:
        _, model = await self.model(args)
        await self._unload(model)

    async def _unload(self, model: Model) -> None:
        if model.weights is not None:
            await self.scheduler.expire(model.weights)


# Go's "forever" is the largest Duration added to now; far enough that clients print "Forever".
FOREVER_AT = 253402300799.0  # 9999-12-31T23:59:59Z


def keep_alive_arg(args: Args) -> float | None:
    value = args.get("keep_alive")
    if value is None:
        return None
    try:
        return parse_keep_alive(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def format_arg(args: Args) -> str | dict[str, Any] | None:
    value = args.get("format")
    if value in (None, ""):
        return None
    if value == "json" or isinstance(value, dict):
        return value
    raise BadRequest(f'invalid format: "{value}"; expected "json" or a valid JSON Schema object')


def messages_arg(args: Args) -> list[dict[str, Any]]:
    messages = args.get("messages") or []
    if not isinstance(messages, list):
        raise BadRequest("messages must be a list")
    out = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role", ""), str):
            raise BadRequest("each message must be an object with a role")
        role = message.get("role", "").lower()
        content = message.get("content", "")
        if not isinstance(content, str):
            raise BadRequest("message content must be a string")
        out.append({**message, "role": role, "content": content})
    return out


def normalise(vector: list[float], dimensions: int = 0) -> list[float]:
    """L2-normalise (after cutting to ``dimensions``), as Ollama's /api/embed does.

    The values come back as float32 ones, as Ollama's are, so that they print in JSON with the
    digits a float32 needs and no more.
    """
    if dimensions and dimensions < len(vector):
        vector = vector[:dimensions]
    if any(not math.isfinite(value) for value in vector):
        raise BadRequest("embedding contains NaN or Inf values")
    norm = math.sqrt(sum(value * value for value in vector))
    return [as_float32(value / norm if norm else value) for value in vector]


_F32 = struct.Struct("f")


def as_float32(value: float) -> float:
    """The float32 nearest ``value``, as the shortest decimal that reads back to it."""
    target = _F32.pack(value)
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        if _F32.pack(candidate) == target:
            return candidate
    return _F32.unpack(target)[0]


def _text(args: Args, key: str) -> str:
    value = args.get(key) or ""
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value


def _think(args: Args, requested: str, caps: list[str]) -> bool | str | None:
    think = args.get("think")
    if "thinking" in caps:
        return True if think is None else think
    if think is True or think in ("low", "medium", "high", "max"):
        raise BadRequest(f'"{requested}" does not support thinking')
    return None


def _runtime(opts: dict[str, Any], load: LoadOptions) -> dict[str, Any]:
    runtime = {k: v for k, v in opts.items() if k not in options.LOAD_OPTIONS}
    # Ollama caps generation at ten contexts' worth so a model that never stops still ends.
    cap = 10 * load.num_ctx
    if not 0 <= runtime.get("num_predict", -1) <= cap:
        runtime["num_predict"] = cap
    return runtime


def _metrics(event: dict[str, Any], started: int, load_duration: int) -> dict[str, Any]:
    out = {"total_duration": time.perf_counter_ns() - started, "load_duration": load_duration,
           "prompt_eval_count": event.get("prompt_eval_count", 0),
           "prompt_eval_duration": event.get("prompt_eval_duration", 0),
           "eval_count": event.get("eval_count", 0),
           "eval_duration": event.get("eval_duration", 0)}
    return {key: value for key, value in out.items() if value}  # Go's omitempty
