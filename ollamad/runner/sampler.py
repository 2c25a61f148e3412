"""One request's llama.cpp sampler chain, built from Ollama's options.

The order follows llama.cpp's common sampler, which Ollama's classic runner used: penalties, then
the filters (top-k, typical, top-p, min-p), temperature, and a seeded random pick. Temperature 0
ends in a greedy pick instead, so that it does not depend on the seed. A grammar (structured
output) comes first: the filters then only ever see tokens the grammar allows, which costs a
grammar check over the whole vocabulary per token but keeps the chain one straight line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import llama_cpp as lc

from ollamad.errors import BadRequest
from ollamad.runner.options import PredictOptions

if TYPE_CHECKING:
    from ollamad.runner.llama import Model

_MIROSTAT_M = 100  # the candidate count llama.cpp's common sampler uses for mirostat 1


class Sampler:
    def __init__(self, model: Model, options: PredictOptions, grammar: str | None) -> None:
        self._model = model
        self._chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        try:
            if grammar is not None:
                self._add(lc.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root"),
                          "the format's grammar does not parse")
            # llama.cpp's convention, as in Ollama: -1 looks back over the whole context.
            self._last_n = (model.n_ctx_per_slot if options.repeat_last_n < 0
                            else options.repeat_last_n)
            self._penalties = self._add(lc.llama_sampler_init_penalties(
                model.n_vocab, self._last_n, options.repeat_penalty,
                options.frequency_penalty, options.presence_penalty))
            self._add_pick(options)
        except BaseException:
            self.close()
            raise

    def _add_pick(self, options: PredictOptions) -> None:
        # Ollama's seed -1 is llama.cpp's LLAMA_DEFAULT_SEED (0xFFFFFFFF): a random seed.
        seed = options.seed & 0xFFFFFFFF
        if options.temperature <= 0:
            self._add(lc.llama_sampler_init_greedy())
        elif options.mirostat == 1:
            self._add(lc.llama_sampler_init_temp(options.temperature))
            self._add(lc.llama_sampler_init_mirostat(
                self._model.n_vocab, seed, options.mirostat_tau, options.mirostat_eta, _MIROSTAT_M))
        elif options.mirostat == 2:
            self._add(lc.llama_sampler_init_temp(options.temperature))
            self._add(lc.llama_sampler_init_mirostat_v2(seed, options.mirostat_tau,
                                                        options.mirostat_eta))
        else:
            if options.top_k > 0:
                self._add(lc.llama_sampler_init_top_k(options.top_k))
            self._add(lc.llama_sampler_init_typical(options.typical_p, 1))
            self._add(lc.llama_sampler_init_top_p(options.top_p, 1))
            self._add(lc.llama_sampler_init_min_p(options.min_p, 1))
            self._add(lc.llama_sampler_init_temp(options.temperature))
            self._add(lc.llama_sampler_init_dist(seed))

    def _add(self, sampler: object, failure: str = "a sampler could not be created") -> object:
        if not sampler:
            raise BadRequest(failure)
        lc.llama_sampler_chain_add(self._chain, sampler)
        return lc.llama_sampler_chain_get(self._chain, lc.llama_sampler_chain_n(self._chain) - 1)

    def accept_prompt(self, tokens: Sequence[int]) -> None:
        """Let the repetition penalties see the prompt, as Ollama's runner does."""
        if self._last_n > 0:
            for token in tokens[-self._last_n:]:
                lc.llama_sampler_accept(self._penalties, token)

    def sample(self, index: int) -> int:
        """Pick the next token from the logits of batch token ``index``, and remember it."""
        return lc.llama_sampler_sample(self._chain, self._model.ctx, index)

    def close(self) -> None:
        if self._chain:
            lc.llama_sampler_free(self._chain)
            self._chain = None
