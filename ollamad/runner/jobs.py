"""Requests turned into jobs for the decode loop: their tokens, and what to do with each output.

A job is built on the reader thread (tokenizing, truncating, parsing options: a bad request fails
before it waits for a slot) and then belongs to the decode thread.

Prompt too long (Ollama's classic runner, v0.9.6): keep the first ``num_keep`` tokens (plus BOS),
drop tokens after them until the prompt fills the slot's context exactly.
Context full while generating: the same runner's context shift, which keeps ``num_keep`` tokens
and drops half of the rest; ``num_predict`` -2 stops with "length" instead. An unbounded
``num_predict`` (-1, or 0 as Ollama's runner read it) stops at 10 times the context, the bound
Ollama's server put on every request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ollamad.errors import BadRequest
from ollamad.runner.grammar import grammar_for
from ollamad.runner.llama import Model
from ollamad.runner.options import FILL_CONTEXT, PredictOptions
from ollamad.runner.sampler import Sampler
from ollamad.runner.textstream import TextStream

UNBOUNDED_PREDICT_FACTOR = 10


@dataclass(eq=False, kw_only=True)
class Job:
    request_id: int
    prompt: list[int]
    # Tokens not yet decoded: the rest of the prompt, then each newly sampled token.
    pending: list[int] = field(default_factory=list)
    cancelled: bool = False
    seq: int = -1
    prompt_eval_count: int = 0
    admitted_ns: int = 0

    @property
    def generating(self) -> bool:
        return False

    def admit(self, seq: int, reused: int) -> None:
        """The job got slot ``seq``, whose cache already holds ``prompt[:reused]``."""
        self.seq = seq
        self.pending = self.prompt[reused:]
        self.prompt_eval_count = len(self.pending)
        self.admitted_ns = time.monotonic_ns()

    def release(self) -> None:
        """Free what the job holds outside Python (its sampler)."""


@dataclass(eq=False, kw_only=True)
class Completion(Job):
    sampler: Sampler
    stream: TextStream
    limit: int
    fill_context: bool
    num_keep: int
    context_prefix: list[int]
    return_context: bool
    generated: list[int] = field(default_factory=list)
    piece_ends: list[int] = field(default_factory=list)
    # Every sampled token counts, the end-of-generation one too, as in Ollama.
    eval_count: int = 0
    first_token_ns: int = 0

    @property
    def generating(self) -> bool:
        return self.eval_count > 0

    def take(self, token: int, model: Model) -> tuple[str, str | None]:
        """Record a sampled token: the text it makes sendable, and the done reason if it ends."""
        self.eval_count += 1
        if self.eval_count == 1:
            self.first_token_ns = time.monotonic_ns()
        if model.is_end(token):
            return self.stream.flush(), "stop"
        piece = model.piece(token)
        self.generated.append(token)
        self.piece_ends.append((self.piece_ends[-1] if self.piece_ends else 0) + len(piece))
        text = self.stream.feed(piece)
        if self.stream.stopped:
            return text, "stop"
        if self.eval_count >= self.limit:
            return text + self.stream.flush(), "length"
        self.pending = [token]
        return text, None

    def summary(self, reason: str) -> dict[str, Any]:
        now = time.monotonic_ns()
        first = self.first_token_ns or now
        summary: dict[str, Any] = {
            "done": True,
            "done_reason": reason,
            "prompt_eval_count": self.prompt_eval_count,
            "prompt_eval_duration": first - self.admitted_ns,
            "prompt_cached": len(self.prompt) - self.prompt_eval_count,
            "eval_count": self.eval_count,
            "eval_duration": now - first,
        }
        if self.return_context:
            # Tokens whose text was cut off with a stop sequence are not part of the answer.
            kept = sum(1 for end in self.piece_ends if end <= self.stream.sent_bytes)
            summary["context"] = self.context_prefix + self.generated[:kept]
        return summary

    def release(self) -> None:
        self.sampler.close()


@dataclass(eq=False, kw_only=True)
class Embedding(Job):
    pooling: str
    total: np.ndarray | None = None
    chosen: np.ndarray | None = None

    def add(self, vectors: np.ndarray, first_position: int) -> None:
        """Fold in the hidden states of the prompt tokens from ``first_position`` on."""
        if self.pooling == "mean":
            total = vectors.sum(axis=0)
            self.total = total if self.total is None else self.total + total
        elif self.pooling == "last":
            self.chosen = vectors[-1]
        elif first_position == 0:
            self.chosen = vectors[0]

    def result(self) -> dict[str, Any]:
        if self.pooling == "mean":
            assert self.total is not None
            vector = self.total / len(self.prompt)
        else:
            assert self.chosen is not None
            vector = self.chosen
        return {"embedding": vector.tolist(), "prompt_eval_count": len(self.prompt)}


def completion_job(model: Model, request_id: int, args: Mapping[str, Any]) -> Completion:
    """Raises :class:`BadRequest`."""
    options = PredictOptions.from_mapping(_mapping(args.get("options"), "options"))
    grammar = grammar_for(args.get("format"))
    prompt = _prompt_tokens(model, args)
    n_ctx = model.n_ctx_per_slot
    num_keep = options.num_keep if options.num_keep >= 0 else len(prompt)
    num_keep = min(num_keep + model.add_bos, n_ctx - 1)
    bounded = 0 < options.num_predict <= UNBOUNDED_PREDICT_FACTOR * n_ctx
    sampler = Sampler(model, options, grammar)
    truncated = truncate(prompt, n_ctx, num_keep)
    sampler.accept_prompt(truncated)
    return Completion(
        request_id=request_id,
        prompt=truncated,
        sampler=sampler,
        stream=TextStream(options.stop),
        limit=options.num_predict if bounded else UNBOUNDED_PREDICT_FACTOR * n_ctx,
        fill_context=options.num_predict == FILL_CONTEXT,
        num_keep=num_keep,
        context_prefix=prompt,
        return_context=bool(args.get("return_context")),
    )


def embedding_job(model: Model, request_id: int, args: Mapping[str, Any]) -> Embedding:
    """Raises :class:`BadRequest`."""
    text = args.get("input")
    if not isinstance(text, str):
        raise BadRequest("embed needs an input string")
    tokens = model.tokenize(text, add_special=True, parse_special=True)
    if not tokens:
        raise BadRequest("no input provided")
    if len(tokens) > model.n_ctx_per_slot:
        if args.get("truncate") is False:
            raise BadRequest("the input length exceeds the context length")
        tokens = tokens[:model.n_ctx_per_slot]
    return Embedding(request_id=request_id, prompt=tokens, pooling=model.pooling)


def truncate(prompt: Sequence[int], n_ctx: int, num_keep: int) -> list[int]:
    """Ollama's classic truncation: the first ``num_keep`` tokens and the last that fit."""
    if len(prompt) <= n_ctx:
        return list(prompt)
    return list(prompt[:num_keep]) + list(prompt[len(prompt) - (n_ctx - num_keep):])


def _prompt_tokens(model: Model, args: Mapping[str, Any]) -> list[int]:
    if isinstance(args.get("tokens"), list):
        tokens = list(args["tokens"])
        model.check_tokens(tokens)
    elif isinstance(args.get("prompt"), str):
        tokens = model.tokenize(args["prompt"], add_special=True, parse_special=True)
    else:
        raise BadRequest("completion needs a prompt string or a tokens list")
    if not tokens:
        raise BadRequest("no input provided")
    return tokens


def _mapping(value: Any, name: str) -> Mapping[str, Any] | None:
    if value is not None and not isinstance(value, Mapping):
        raise BadRequest(f"{name} must be a map")
    return value
