"""A thin typed layer over llama-cpp-python's low-level API: load, tokens, batches, KV memory.

Everything that touches a llama.cpp pointer lives here, so the scheduling code above it reads as
plain Python. The context is used by the decode thread only; tokenizing and detokenizing read the
immutable vocabulary and may run on the reader thread at the same time.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp as lc
import numpy as np

from ollamad.errors import BadRequest

log = logging.getLogger(__name__)

# ggml_log_level in the pinned llama.cpp (ggml.h); llama-cpp-python's own table is out of date.
_LOG_WARN, _LOG_ERROR, _LOG_CONT = 3, 4, 5
# llama.cpp's log lines start with the function that wrote them; a reason reads better without.
_LOG_PREFIX = re.compile(r"^(\w+: )+(error loading model: )?")
POOLINGS: dict[int | None, str] = {
    lc.LLAMA_POOLING_TYPE_CLS: "cls",
    lc.LLAMA_POOLING_TYPE_LAST: "last",
}


class LoadError(Exception):
    """The model or its context could not be created; the message names the file and the cause."""


class DecodeError(Exception):
    pass


class LlamaLog:
    """llama.cpp's log → stderr (warnings and errors; everything when ``verbose``).

    The recent error lines are kept: llama.cpp reports why a load failed only in its log.
    """

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.errors: deque[str] = deque(maxlen=8)
        self._level = 0
        # ctypes must keep the callback object alive for as long as C may call it.
        self._callback = lc.llama_log_callback(self._write)
        lc.llama_log_set(self._callback, ctypes.c_void_p(0))

    def _write(self, level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        if level != _LOG_CONT:
            self._level = level
        message = text.decode(errors="replace")
        if self._level == _LOG_ERROR and message.strip():
            self.errors.append(message.strip())
        if self.verbose or self._level in (_LOG_WARN, _LOG_ERROR):
            sys.stderr.write(message)

    def reason(self) -> str:
        """The first error logged since the last call, without its function-name prefix."""
        first = next(iter(self.errors), "llama.cpp gave no reason")
        self.errors.clear()
        return _LOG_PREFIX.sub("", first)


@dataclass(frozen=True)
class LoadParams:
    model: str
    num_ctx: int = 2048
    num_batch: int = 512
    num_thread: int | None = None
    use_mmap: bool = True
    parallel: int = 1
    flash_attn: bool | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> LoadParams:
        if not isinstance(args.get("model"), str) or not args["model"]:
            raise BadRequest("load needs the model's path")
        values: dict[str, Any] = {"model": args["model"]}
        for name in ("num_ctx", "num_batch", "num_thread", "parallel"):
            value = args.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadRequest(f"load option {name} must be a positive integer")
            values[name] = value
        for name in ("use_mmap", "flash_attn"):
            if args.get(name) is not None:
                values[name] = bool(args[name])
        return cls(**values)

    @property
    def threads(self) -> int:
        # All the CPUs this process may run on; llama-cpp-python's default takes half of them.
        return self.num_thread or len(os.sched_getaffinity(0))


class Batch:
    """A reusable llama_batch of single-sequence tokens."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw = lc.llama_batch_init(capacity, 0, 1)
        self.raw.n_tokens = 0

    def __len__(self) -> int:
        return self.raw.n_tokens

    def clear(self) -> None:
        self.raw.n_tokens = 0

    def add(self, token: int, position: int, seq: int, output: bool) -> int:
        """Append one token; returns its index, by which its logits or embedding are read."""
        i = self.raw.n_tokens
        if i >= self.capacity:
            raise OverflowError("batch is full")
        self.raw.token[i] = token
        self.raw.pos[i] = position
        self.raw.n_seq_id[i] = 1
        self.raw.seq_id[i][0] = seq
        self.raw.logits[i] = output
        self.raw.n_tokens = i + 1
        return i


class Model:
    """A loaded model with one context of ``parallel`` sequences of ``num_ctx`` tokens each."""

    def __init__(self, params: LoadParams, model: Any, ctx: Any) -> None:
        self.params = params
        self.model = model
        self.ctx = ctx
        self.vocab = lc.llama_model_get_vocab(model)
        self.memory = lc.llama_get_memory(ctx)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        self.n_embd = lc.llama_model_n_embd(model)
        self.n_ctx_per_slot = min(params.num_ctx, lc.llama_n_ctx_seq(ctx))
        self.add_bos = bool(lc.llama_vocab_get_add_bos(self.vocab))
        self.can_shift = bool(lc.llama_memory_can_shift(self.memory))
        # A recurrent state is not a KV stream whose prefix survives a copy and a trim.
        self.can_copy = not (lc.llama_model_is_recurrent(model) or lc.llama_model_is_hybrid(model))
        self.pooling = _pooling(model)
        self._embeddings = False

    @classmethod
    def load(cls, params: LoadParams, llama_log: LlamaLog,
             on_progress: Callable[[float], None]) -> Model:
        """Raises :class:`LoadError`."""
        try:
            # llama.cpp's message for a missing or unreadable file is vaguer than the OS's.
            with open(params.model, "rb"):
                pass
        except OSError as exc:
            raise LoadError(f"error loading model {params.model}: {exc.strerror}") from exc

        def progress(value: float, _user_data: ctypes.c_void_p) -> bool:
            try:
                on_progress(value)
            except Exception:
                # An exception must not escape into C, and returning False would abort the load.
                log.exception("progress callback failed")
            return True

        model_params = lc.llama_model_default_params()
        callback = lc.llama_progress_callback(progress)
        model_params.progress_callback = callback
        model_params.load_mode = (lc.LLAMA_LOAD_MODE_MMAP if params.use_mmap
                                  else lc.LLAMA_LOAD_MODE_NONE)
        lc.llama_backend_init()
        model = lc.llama_model_load_from_file(params.model.encode(), model_params)
        if not model:
            raise LoadError(f"error loading model {params.model}: {llama_log.reason()}")
        ctx = lc.llama_init_from_model(model, _context_params(params, model))
        if not ctx:
            lc.llama_model_free(model)
            raise LoadError(f"error creating a context for {params.model}: {llama_log.reason()}")
        return cls(params, model, ctx)

    def info(self) -> dict[str, Any]:
        return {
            "n_ctx": lc.llama_n_ctx(self.ctx),
            "n_ctx_per_slot": self.n_ctx_per_slot,
            "n_ctx_train": lc.llama_model_n_ctx_train(self.model),
            "n_embd": self.n_embd,
            "n_vocab": self.n_vocab,
            "bos": self.add_bos,
            "slots": self.params.parallel,
            "num_thread": self.params.threads,
            "pooling": self.pooling,
            "can_shift": self.can_shift,
        }

    # -- tokens (any thread) --------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode()
        # A token covers at least one byte; add room for BOS/EOS.
        size = len(data) + 2
        while True:
            out = (lc.llama_token * size)()
            n = lc.llama_tokenize(self.vocab, data, len(data), out, size, add_special,
                                  parse_special)
            if n >= 0:
                return list(out[:n])
            size = -n

    def piece(self, token: int) -> bytes:
        """The bytes of a generated token; special tokens as their text, as Ollama renders them."""
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = lc.llama_token_to_piece(self.vocab, token, buf, size, 0, True)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def detokenize(self, tokens: Sequence[int]) -> str:
        self.check_tokens(tokens)
        ids = (lc.llama_token * len(tokens))(*tokens)
        size = 8 * len(tokens) + 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = lc.llama_detokenize(self.vocab, ids, len(tokens), buf, size, False, True)
            if n >= 0:
                return buf.raw[:n].decode(errors="replace")
            size = -n

    def check_tokens(self, tokens: Sequence[int]) -> None:
        # llama.cpp aborts the whole process on an out-of-range token id.
        for token in tokens:
            if isinstance(token, bool) or not isinstance(token, int) \
                    or not 0 <= token < self.n_vocab:
                raise BadRequest(f"invalid token {token!r}: the vocabulary has {self.n_vocab}")

    def is_end(self, token: int) -> bool:
        return bool(lc.llama_vocab_is_eog(self.vocab, token))

    # -- context (decode thread) ----------------------------------------------------------------

    def decode(self, batch: Batch, *, embeddings: bool) -> None:
        if embeddings != self._embeddings:
            lc.llama_set_embeddings(self.ctx, embeddings)
            self._embeddings = embeddings
        status = lc.llama_decode(self.ctx, batch.raw)
        if status != 0:
            raise DecodeError(f"llama_decode failed with status {status}")

    def embedding(self, index: int) -> np.ndarray:
        """The hidden state of the batch token at ``index`` (decoded with embeddings on)."""
        pointer = lc.llama_get_embeddings_ith(self.ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_embd,)).copy()

    def forget(self, seq: int, start: int) -> bool:
        """Drop ``seq``'s cache from position ``start`` on. False if it cannot drop a part."""
        return bool(lc.llama_memory_seq_rm(self.memory, seq, start, -1))

    def copy(self, source: int, target: int) -> None:
        """Make ``target``'s cache a copy of ``source``'s. With one KV stream per sequence
        llama.cpp copies the whole stream, at the start of the next decode."""
        lc.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def discard(self, seq: int, keep: int, count: int, end: int) -> bool:
        """Remove positions [keep, keep+count) of ``seq`` and move the rest down, if possible."""
        if not self.can_shift or not lc.llama_memory_seq_rm(self.memory, seq, keep, keep + count):
            return False
        lc.llama_memory_seq_add(self.memory, seq, keep + count, end, -count)
        return True


def _context_params(params: LoadParams, model: Any) -> Any:
    ctx_params = lc.llama_context_default_params()
    ctx_params.n_ctx = params.num_ctx * params.parallel
    ctx_params.n_batch = params.num_batch
    ctx_params.n_ubatch = params.num_batch
    ctx_params.n_seq_max = params.parallel
    # One attention stream per sequence: the slots hold unrelated conversations.
    ctx_params.kv_unified = False
    # An embedding request marks every token as an output; the default allows one per sequence.
    ctx_params.n_outputs_max_per_seq = 0
    ctx_params.n_threads = ctx_params.n_threads_batch = params.threads
    ctx_params.flash_attn_type = _FLASH_ATTN[params.flash_attn]
    if _pooling_type(model) is not None:
        # Embeddings are pooled here, over chunks, so llama.cpp must hand out every token's.
        ctx_params.pooling_type = lc.LLAMA_POOLING_TYPE_NONE
    return ctx_params


# llama.cpp's "auto" turns flash attention on where it runs (always on the CPU). Without it,
# attention of a one-token batch rounds differently from the same token inside a longer batch,
# so a reused prompt prefix or a chunked prompt would change a greedy answer.
_FLASH_ATTN = {
    None: lc.LLAMA_FLASH_ATTN_TYPE_AUTO,
    True: lc.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    False: lc.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


def _pooling_type(model: Any) -> int | None:
    """The pooling an embedding model's GGUF asks for; None when it says nothing."""
    arch = _meta(model, b"general.architecture")
    value = _meta(model, arch.encode() + b".pooling_type") if arch else None
    return int(value) if value and value.lstrip("-").isdigit() else None


def _pooling(model: Any) -> str:
    # Mean pooling unless the GGUF says otherwise: generative models say nothing, and the mean of
    # their last hidden states is what llama.cpp's --pooling mean gives for them.
    return POOLINGS.get(_pooling_type(model), "mean")


def _meta(model: Any, key: bytes) -> str | None:
    buf = ctypes.create_string_buffer(256)
    n = lc.llama_model_meta_val_str(model, key, buf, len(buf))
    return buf.value.decode(errors="replace") if n >= 0 else None
