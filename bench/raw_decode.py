"""The ceiling: batched greedy decoding of N sequences in-process, no daemon, no transport.

    .venv/bin/python -m bench.raw_decode [--tokens 128] [--threads N] [--ctx 2048]

llama-cpp-python's low-level API as the issue measured it: one context of ``--seqs`` sequences of
``--ctx`` tokens each (separate KV streams, flash attention as llama.cpp decides, batch 512: the
runner's settings), the prompt of every sequence in one batch, then one llama_decode per step
carrying one token of each sequence, a greedy sampler chain per sequence. End of text is ignored:
every sequence decodes exactly ``--tokens`` tokens.
"""

from __future__ import annotations

import argparse
import ctypes
import time
from pathlib import Path
from typing import Any

import llama_cpp as lc

from bench.common import PROMPT, Sample, aggregate_rate, cpu_count, fetch_model

BATCH = 512


@lc.llama_log_callback
def _quiet(_level: int, _text: bytes, _user_data: ctypes.c_void_p) -> None:
    """llama.cpp's log, dropped (it would drown the benchmark's output)."""


class RawDecoder:
    """A model and a context of ``seqs`` sequences, reused across runs."""

    def __init__(self, model: Path, seqs: int, ctx: int, threads: int) -> None:
        lc.llama_log_set(_quiet, ctypes.c_void_p(0))
        lc.llama_backend_init()
        self.model = lc.llama_model_load_from_file(str(model).encode(),
                                                   lc.llama_model_default_params())
        params = lc.llama_context_default_params()
        params.n_ctx = ctx * seqs
        params.n_batch = params.n_ubatch = BATCH
        params.n_seq_max = seqs
        params.kv_unified = False
        params.n_threads = params.n_threads_batch = threads
        self.ctx = lc.llama_init_from_model(self.model, params)
        if not self.model or not self.ctx:
            raise RuntimeError(f"could not load {model}")
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.memory = lc.llama_get_memory(self.ctx)
        self.seqs = seqs
        self.batch = lc.llama_batch_init(BATCH, 0, 1)

    def close(self) -> None:
        lc.llama_batch_free(self.batch)
        lc.llama_free(self.ctx)
        lc.llama_model_free(self.model)

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        out = (lc.llama_token * (len(data) + 2))()
        n = lc.llama_tokenize(self.vocab, data, len(data), out, len(out), True, True)
        return list(out[:n])

    def run(self, seqs: int, tokens: int, prompt: str = PROMPT) -> list[Sample]:
        """``seqs`` sequences of ``tokens`` tokens each; the arrival of every token stamped."""
        if not 0 < seqs <= self.seqs or len(self.tokenize(prompt)) * seqs > BATCH:
            raise ValueError(f"{seqs} sequences do not fit")
        lc.llama_memory_clear(self.memory, True)
        samplers = [_greedy() for _ in range(seqs)]
        try:
            start = time.perf_counter()
            prompt_tokens = self.tokenize(prompt)
            self._fill([(token, i, seq) for seq in range(seqs)
                        for i, token in enumerate(prompt_tokens)], last_only=len(prompt_tokens))
            stamps: list[float] = []
            generated: list[list[int]] = [[] for _ in range(seqs)]
            position = len(prompt_tokens)
            for step in range(tokens):
                self._decode()
                outputs = [lc.llama_sampler_sample(samplers[seq], self.ctx, _output(seq, step,
                           len(prompt_tokens))) for seq in range(seqs)]
                stamps.append(time.perf_counter())
                for seq, token in enumerate(outputs):
                    generated[seq].append(token)
                if step + 1 < tokens:
                    self._fill([(token, position + step, seq)
                                for seq, token in enumerate(outputs)], last_only=1)
        finally:
            for sampler in samplers:
                lc.llama_sampler_free(sampler)
        return [Sample(start, tuple(stamps), self.text(ids)) for ids in generated]

    def text(self, tokens: list[int]) -> str:
        buf = ctypes.create_string_buffer(256)
        pieces = []
        for token in tokens:
            length = lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
            pieces.append(buf.raw[:length])
        return b"".join(pieces).decode(errors="replace")

    def _fill(self, entries: list[tuple[int, int, int]], last_only: int) -> None:
        """Put (token, position, sequence) entries in the batch; logits for every
        ``last_only``-th entry (the last token of each sequence's run)."""
        batch = self.batch
        for i, (token, position, seq) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = (i + 1) % last_only == 0
        batch.n_tokens = len(entries)

    def _decode(self) -> None:
        status = lc.llama_decode(self.ctx, self.batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")


def _output(seq: int, step: int, prompt_length: int) -> int:
    """The batch index of ``seq``'s logits: after its prompt on the first step, else its own."""
    return (seq + 1) * prompt_length - 1 if step == 0 else seq


def _greedy() -> Any:
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
    return chain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--seqs", type=int, default=8)
    args = parser.parse_args()
    decoder = RawDecoder(fetch_model(), args.seqs, args.ctx, args.threads)
    decoder.run(1, 8)  # warm up
    levels = [n for n in (1, 2, 4, 8, 16) if n <= args.seqs]
    for seqs in levels:
        samples = decoder.run(seqs, args.tokens)
        print(f"{seqs} sequences: {aggregate_rate(samples):7.1f} tokens/s, first token "
              f"{samples[0].first_token * 1000:.0f} ms")
    decoder.close()


if __name__ == "__main__":
    main()
