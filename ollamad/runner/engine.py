"""Continuous batching: the decode thread's loop over the slots of one llama context.

Each slot is one sequence of the context with its own ``num_ctx`` tokens of KV cache. Every step
builds one batch: the newly sampled token of each generating slot, then prompt tokens of slots
still reading theirs, and decodes it with a single ``llama_decode``. A finished or cancelled job
frees its slot at once; queued jobs take free slots in arrival order, each the free slot whose
cache shares the longest prefix with its prompt, so a conversation's next turn evaluates only
its new tokens. A job that would keep less of that cache than it throws away takes the least
recently used slot instead, starting from a copy of the longest cached prefix when that is
cheaper than evaluating it (Ollama's multi-user cache does the same).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ollamad.protocol import ErrorCode
from ollamad.runner.jobs import Completion, Embedding, Job
from ollamad.runner.llama import Batch, DecodeError, Model

log = logging.getLogger(__name__)

# While some slots stream, a step takes at most this many prompt tokens besides their new tokens:
# a long prompt then delays the running streams by one such chunk per token (tens of milliseconds
# on a CPU), not by its whole evaluation.
PROMPT_CHUNK_WHILE_STREAMING = 128
# When a request wakes an idle engine, its first step waits until no other request has arrived
# for GATHER_QUIET seconds (at most GATHER_MAX in all). Clients that start together reach the
# runner a few milliseconds apart; without the wait the first one's step runs alone and every
# other waits for it and then for a step of all of them, about twice the time to first token.
GATHER_QUIET = 0.002
GATHER_MAX = 0.010


class Emitter(Protocol):
    def event(self, request_id: int, data: dict[str, Any]) -> None: ...

    def done(self, request_id: int) -> None: ...

    def error(self, request_id: int, code: str, message: str) -> None: ...


@dataclass(eq=False)
class Slot:
    seq: int
    # The tokens this sequence's KV cache holds, by position; kept after a job ends for reuse.
    cached: list[int] = field(default_factory=list)
    job: Job | None = None
    # The prompt length of the last job, so that what follows it in ``cached`` is its answer.
    prompt_length: int = 0
    last_used: int = 0


@dataclass(frozen=True)
class _Entry:
    """One job's tokens in the batch being decoded."""

    job: Job
    first: int
    count: int
    position: int


class Engine:
    def __init__(self, model: Model, emit: Emitter) -> None:
        self._model = model
        self._emit = emit
        self._slots = [Slot(seq) for seq in range(model.params.parallel)]
        self._queue: deque[Job] = deque()
        self._wake = threading.Condition()
        # Room for every slot's next token, however small num_batch is.
        self._batch = Batch(max(model.params.num_batch, model.params.parallel))
        self._admissions = 0
        self._arrivals = 0

    # -- any thread -----------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._wake:
            self._queue.append(job)
            self._arrivals += 1
            self._wake.notify()

    def cancel(self, request_id: int) -> Job | None:
        """Cancel a request. A job still queued is returned for the caller to report and release;
        a running one is flagged, and the decode loop ends it at its next step."""
        with self._wake:
            for job in self._queue:
                if job.request_id == request_id:
                    self._queue.remove(job)
                    return job
            for slot in self._slots:
                if slot.job is not None and slot.job.request_id == request_id:
                    slot.job.cancelled = True
        return None

    def load(self) -> dict[str, Any]:
        with self._wake:
            return {
                "busy": sum(slot.job is not None for slot in self._slots),
                "queued": len(self._queue),
                "slot_tokens": [len(slot.cached) for slot in self._slots],
            }

    # -- the decode thread ----------------------------------------------------------------------

    def run(self) -> None:
        while True:
            self.step()

    def step(self) -> None:
        jobs = []
        for job in self._wait_for_jobs():
            if job.cancelled:
                self._end(job)
                self._emit.error(job.request_id, ErrorCode.CANCELLED, "request cancelled")
            else:
                jobs.append(job)
        entries = self._fill_batch(jobs)
        if not entries:
            return
        try:
            self._model.decode(self._batch, embeddings=any(
                isinstance(entry.job, Embedding) for entry in entries))
        except DecodeError as exc:
            for entry in entries:
                self._fail(entry.job, str(exc))
            return
        for entry in entries:
            self._advance(entry)

    def _wait_for_jobs(self) -> list[Job]:
        """The running jobs in arrival order, after admitting queued ones; waits while idle."""
        with self._wake:
            while True:
                if self._queue and all(slot.job is None for slot in self._slots):
                    self._gather()
                self._admit()
                busy = sorted((slot for slot in self._slots if slot.job is not None),
                              key=lambda slot: slot.last_used)
                if busy:
                    return [slot.job for slot in busy if slot.job is not None]
                self._wake.wait()

    def _gather(self) -> None:
        """Let requests that arrive together start together (see GATHER_QUIET)."""
        deadline = time.monotonic() + GATHER_MAX
        while len(self._queue) < len(self._slots):
            arrivals = self._arrivals
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.wait(min(GATHER_QUIET, remaining))
            if self._arrivals == arrivals:
                return

    def _admit(self) -> None:
        while self._queue:
            free = [slot for slot in self._slots if slot.job is None]
            if not free:
                return
            job = self._queue.popleft()
            prefixes = {slot.seq: _reusable(slot, job) for slot in self._slots}
            slot = self._choose(free, prefixes)
            # Another slot, busy or not, may hold more of the prompt (a second conversation
            # with the same long system prompt): start from a copy of its cache.
            source = max(self._slots, key=lambda other: prefixes[other.seq])
            copied = (source is not slot
                      and self._worth_copying(prefixes[source.seq] - prefixes[slot.seq]))
            if copied:
                self._model.copy(source.seq, slot.seq)
                slot.cached[:] = source.cached
                prefixes[slot.seq] = prefixes[source.seq]
            # At least one token is evaluated: its logits give the first sampled token.
            reused = min(prefixes[slot.seq], len(job.prompt) - 1)
            if not self._model.forget(slot.seq, reused):
                self._model.forget(slot.seq, 0)
                reused = 0
            del slot.cached[reused:]
            job.admit(slot.seq, reused)
            self._admissions += 1
            slot.job, slot.last_used = job, self._admissions
            slot.prompt_length = len(job.prompt)
            log.debug("request %d: slot %d, reusing %d cached tokens%s, evaluating %d",
                      job.request_id, slot.seq, reused,
                      f" copied from slot {source.seq}" if copied else "", len(job.pending))

    def _choose(self, free: Sequence[Slot], prefixes: dict[int, int]) -> Slot:
        """The free slot whose cache shares the longest prefix with the job's prompt, unless
        taking it would lose a conversation: the prefix ends before the slot's last prompt did,
        and it is less than half the cache (another conversation that shares only the system
        prompt, say). Then the least recently used slot, never used first. A slot's last answer
        alone is not worth keeping: the same prompt again asks for a new one.

        Among equals, a slot next to the busy ones: llama.cpp decodes each run of consecutive
        sequence ids as a pass of its own."""
        busy = {slot.seq for slot in self._slots if slot.job is not None}

        def runs(slot: Slot) -> int:
            seqs = sorted(busy | {slot.seq})
            return 1 + sum(b != a + 1 for a, b in itertools.pairwise(seqs))

        best = max(free, key=lambda slot: (prefixes[slot.seq], -runs(slot), -slot.last_used))
        prefix = prefixes[best.seq]
        if prefix >= min(best.prompt_length, len(best.cached)) or 2 * prefix >= len(best.cached):
            return best
        return min(free, key=lambda slot: (runs(slot), slot.last_used))

    def _worth_copying(self, gain: int) -> bool:
        """Whether copying another slot's cache beats evaluating ``gain`` more prompt tokens.
        A copy moves the whole stream: on SmolLM2-135M it cost as much as evaluating 4 tokens
        at 2048 tokens per slot, 9 at 8192; larger models evaluate slower for their cache size."""
        return self._model.can_copy and gain > 0 and gain * 256 >= self._model.n_ctx_per_slot

    def _fill_batch(self, jobs: Sequence[Job]) -> list[_Entry]:
        self._batch.clear()
        room = self._batch.capacity
        streaming = any(job.generating for job in jobs)
        prompt_room = PROMPT_CHUNK_WHILE_STREAMING if streaming else room
        # Embedding tokens make llama.cpp output every token of the batch: a step reads prompts
        # of one kind only, the kind of the earliest job still reading its prompt.
        prompt_kind: type[Job] | None = None
        chosen: list[tuple[Job, int]] = []
        # Generating jobs first: a stream's next token never waits for someone's prompt.
        for job in sorted(jobs, key=lambda job: not job.generating):
            if job.generating:
                if not self._make_room(job):
                    continue
                count = min(len(job.pending), room)
            else:
                prompt_kind = prompt_kind or type(job)
                if type(job) is not prompt_kind:
                    continue
                embedding = isinstance(job, Embedding)
                count = min(len(job.pending), room if embedding else min(room, prompt_room))
                prompt_room -= count
            if count <= 0:
                continue
            chosen.append((job, count))
            room -= count
        # In sequence order: with one KV stream per slot, llama.cpp puts consecutive sequence
        # ids into one micro-batch and starts a new one at every break in the order, and each
        # micro-batch is a whole pass through the model.
        return [self._add_to_batch(job, count)
                for job, count in sorted(chosen, key=lambda chosen: chosen[0].seq)]

    def _add_to_batch(self, job: Job, count: int) -> _Entry:
        slot = self._slots[job.seq]
        first, position = len(self._batch), len(slot.cached)
        every = isinstance(job, Embedding)
        last = count - 1 if count == len(job.pending) else -1
        for i, token in enumerate(job.pending[:count]):
            self._batch.add(token, position + i, slot.seq, every or i == last)
        return _Entry(job, first, count, position)

    def _make_room(self, job: Job) -> bool:
        """Make room in a generating job's slot for its next token. False if the job ended."""
        assert isinstance(job, Completion)
        slot = self._slots[job.seq]
        n_ctx = self._model.n_ctx_per_slot
        used = len(slot.cached)
        if used + len(job.pending) <= n_ctx:
            return True
        if job.fill_context:
            self._finish(job, "length")
            return False
        # Ollama's context shift: free half of what follows the kept tokens.
        discard = max(max((n_ctx - job.num_keep) // 2, 1) - (n_ctx - used), 0)
        if self._model.discard(slot.seq, job.num_keep, discard, used):
            del slot.cached[job.num_keep:job.num_keep + discard]
        else:
            # The cache cannot move positions (some architectures): evaluate the kept tokens anew.
            kept = slot.cached[:job.num_keep] + slot.cached[job.num_keep + discard:]
            self._model.forget(slot.seq, 0)
            slot.cached.clear()
            job.pending = kept + job.pending
        log.debug("request %d: context shift in slot %d, discarded %d tokens",
                  job.request_id, slot.seq, discard)
        return True

    def _advance(self, entry: _Entry) -> None:
        job = entry.job
        decoded = job.pending[:entry.count]
        self._slots[job.seq].cached.extend(decoded)
        del job.pending[:entry.count]
        if isinstance(job, Embedding):
            vectors = np.stack([self._model.embedding(entry.first + i) for i in range(entry.count)])
            job.add(vectors, entry.position)
            if not job.pending:
                self._end(job)
                self._emit.event(job.request_id, job.result())
                self._emit.done(job.request_id)
            return
        assert isinstance(job, Completion)
        if job.pending:
            return
        text, reason = job.take(job.sampler.sample(entry.first + entry.count - 1), self._model)
        if text:
            self._emit.event(job.request_id, {"content": text})
        if reason is not None:
            self._finish(job, reason)

    def _finish(self, job: Completion, reason: str) -> None:
        self._end(job)
        self._emit.event(job.request_id, job.summary(reason))
        self._emit.done(job.request_id)

    def _fail(self, job: Job, message: str) -> None:
        # A failed decode may have left part of the batch in the cache: start the slot afresh.
        slot = self._slots[job.seq]
        self._model.forget(slot.seq, 0)
        slot.cached.clear()
        self._end(job)
        self._emit.error(job.request_id, ErrorCode.INTERNAL, message)

    def _end(self, job: Job) -> None:
        with self._wake:
            self._slots[job.seq].job = None
        job.release()


def _reusable(slot: Slot, job: Job) -> int:
    """How much of ``slot``'s cache ``job`` can keep. An embedding needs the hidden state of
    every token, so it keeps nothing (and takes the least recently used slot, sparing the
    caches of the others)."""
    return common_prefix(slot.cached, job.prompt) if isinstance(job, Completion) else 0


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
