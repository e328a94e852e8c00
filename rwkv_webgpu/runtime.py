"""The serving engine: many concurrent generation requests over one model, continuously batched.

A background thread owns a batched :class:`State`. Between steps, waiting requests join free
slots (starting from the prefix cache when it has their prompt) and finished or cancelled ones
leave. Each step packs prompt chunks of new requests with one decode token of every running
request. While the GPU runs a step, the model's step runner encodes the command buffer of the
next one (on real GPUs; see ``StepRunner.encode_ahead``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cache import PrefixCache
from .errors import RWKVError, TokenError
from .generate import use_gpu_sampling
from .models.base import Model
from .models.step import Plan, sampling_row, share_budget
from .sampling import Sampler, SamplingConfig
from .text import TextStream

log = logging.getLogger(__name__)
_END = object()


@dataclass
class Completion:
    """A finished request."""

    text: str
    tokens: list[int]
    finish_reason: str  # "stop" (stop string), "eos", "length", "cancelled" or "error"
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    error: str = ""


@dataclass
class _Request:
    id: int
    prompt: list[int]
    max_tokens: int
    sampling: SamplingConfig
    stop_at_eos: bool
    stream: TextStream
    sampler: Sampler
    gpu: bool = False  # its decoding steps may choose the token on the GPU (see Engine)
    events: queue.Queue[Any] = field(default_factory=queue.Queue)
    loop: asyncio.AbstractEventLoop | None = None
    aevents: asyncio.Queue[Any] | None = None
    pending: list[int] = field(default_factory=list)
    ready_logits: np.ndarray | None = None
    tokens: list[int] = field(default_factory=list)
    cached: int = 0
    cancelled: bool = False
    done: Completion | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: Any) -> None:
        self.events.put(item)
        if self.loop is not None and self.aevents is not None:
            self.loop.call_soon_threadsafe(self.aevents.put_nowait, item)


class RequestHandle:
    """A submitted request: iterate for text deltas, ``result()`` for the :class:`Completion`."""

    def __init__(self, engine: Engine, req: _Request):
        self._engine = engine
        self._req = req

    @property
    def id(self) -> int:
        return self._req.id

    def cancel(self) -> None:
        """Stop generating and free the slot (the completion's finish_reason is "cancelled")."""
        self._engine._cancel(self._req)

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self._req.events.get()
            if item is _END:
                return
            yield item

    def result(self, timeout: float | None = None) -> Completion:
        if not self._req.finished.wait(timeout):
            raise TimeoutError(f"request {self.id} did not finish in {timeout} s")
        assert self._req.done is not None
        if self._req.done.finish_reason == "error":
            raise RWKVError(self._req.done.error)
        return self._req.done

    async def __aiter__(self) -> AsyncIterator[str]:
        assert self._req.aevents is not None, "submit from a coroutine to stream asynchronously"
        while True:
            item = await self._req.aevents.get()
            if item is _END:
                return
            yield item

    async def aresult(self) -> Completion:
        return await asyncio.get_running_loop().run_in_executor(None, self.result)


@dataclass
class EngineStats:
    steps: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    requests: int = 0


class Engine:
    """Serve generation requests for ``model`` with up to ``max_batch`` running at once.

    ``gpu_sampling`` as in :func:`rwkv_webgpu.generate`: None (default) chooses the tokens of
    decoding steps on the GPU, reading back only their ids, when every request in the step
    allows it (a plain Sampler with temperature, top_p and top_k only) and the adapter is a GPU;
    True insists (a request whose settings need the host is refused at submit); False never.
    """

    def __init__(self, model: Model, *, max_batch: int = 8, cache: PrefixCache | None = None,
                 token_chunk_size: int | None = None, gpu_sampling: bool | None = None):  # fmt: skip
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if model.tokenizer is None:
            raise RWKVError("the engine needs a model with a tokenizer (load_model(..., tokenizer=...))")
        self.model = model
        self.max_batch = max_batch
        self.cache = cache
        self.budget = min(token_chunk_size or model.token_chunk_size, model.token_chunk_size)
        self.gpu_sampling = gpu_sampling
        self.state = model.new_state(max_batch)
        self.stats = EngineStats()
        self._slots: list[_Request | None] = [None] * max_batch
        self._waiting: deque[_Request] = deque()
        self._cv = threading.Condition()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- submitting ------------------------------------------------------------------------
    def submit(self, prompt: str | Sequence[int], *, max_tokens: int = 256, sampling: SamplingConfig | None = None,
               stop: Sequence[str] = (), stop_at_eos: bool = True) -> RequestHandle:  # fmt: skip
        """Queue a request (thread-safe). Called from a coroutine, the handle also streams async."""
        if self._closed:
            raise RWKVError("this engine is closed")
        ids = self.model.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise TokenError("empty prompt: give at least one token")
        self.model.check_tokens(ids)
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        cfg = sampling or SamplingConfig()
        sampler = Sampler.for_model(self.model, cfg)
        gpu = use_gpu_sampling(self.model, sampler, self.gpu_sampling)  # ConfigError if insisted on and impossible
        req = _Request(next(self._ids), ids, max_tokens, cfg, stop_at_eos, TextStream(self.model.tokenizer, stop),
                       sampler, gpu)  # fmt: skip
        try:
            req.loop = asyncio.get_running_loop()
            req.aevents = asyncio.Queue()
        except RuntimeError:
            pass
        with self._cv:
            self._waiting.append(req)
            self.stats.requests += 1
            self._ensure_thread()
            self._cv.notify()
        return RequestHandle(self, req)

    def generate(self, prompt: str | Sequence[int], **kwargs: Any) -> Completion:
        return self.submit(prompt, **kwargs).result()

    def stream(self, prompt: str | Sequence[int], **kwargs: Any) -> Iterator[str]:
        return iter(self.submit(prompt, **kwargs))

    async def agenerate(self, prompt: str | Sequence[int], **kwargs: Any) -> Completion:
        return await self.submit(prompt, **kwargs).aresult()

    async def astream(self, prompt: str | Sequence[int], **kwargs: Any) -> AsyncIterator[str]:
        handle = self.submit(prompt, **kwargs)
        async for piece in handle:
            yield piece

    def close(self) -> None:
        """Cancel everything and stop the worker thread."""
        with self._cv:
            self._closed = True
            for req in list(self._waiting) + [r for r in self._slots if r]:
                req.cancelled = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the worker --------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="rwkv-engine", daemon=True)
            self._thread.start()

    def _cancel(self, req: _Request) -> None:
        with self._cv:
            req.cancelled = True
            self._cv.notify()

    def _finish(self, slot: int | None, req: _Request, reason: str, error: str = "") -> None:
        if reason in ("eos", "length"):
            tail = req.stream.finish()
            if tail:
                req.emit(tail)
        req.done = Completion(req.stream.text, list(req.tokens), reason, len(req.prompt), len(req.tokens),
                              req.cached, error)  # fmt: skip
        req.emit(_END)
        req.finished.set()
        if slot is not None:
            self._slots[slot] = None

    def _admit(self) -> None:
        """Move waiting requests into free slots and drop cancelled ones (holding the lock)."""
        for slot, req in enumerate(self._slots):
            if req is not None and req.cancelled:
                self._finish(slot, req, "cancelled")
        while self._waiting and None in self._slots:
            req = self._waiting.popleft()
            if req.cancelled:
                self._finish(None, req, "cancelled")
                continue
            slot = self._slots.index(None)
            self._slots[slot] = req
            if self.cache is not None:
                req.cached, req.ready_logits = self.cache.restore(req.prompt, self.state, slot)
            else:
                self.state.reset(slot)
            req.pending = req.prompt[req.cached :]

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._admit()
                while not self._closed and not self._waiting and not any(self._slots):
                    self._cv.wait()
                    self._admit()
                if self._closed and not any(self._slots) and not self._waiting:
                    return
                if self._closed:
                    continue
            try:
                self._step()
            except Exception as exc:  # report to every running request, keep serving
                log.exception("engine step failed")
                with self._cv:
                    for slot, req in enumerate(self._slots):
                        if req is not None:
                            self._finish(slot, req, "error", f"generation failed: {exc}")

    def _step(self) -> None:
        runner = self.model.runner
        # full prefix-cache hits have their logits already: sample without a GPU step
        for slot, req in enumerate(self._slots):
            if req is not None and req.ready_logits is not None and not req.pending:
                logits, req.ready_logits = req.ready_logits, None
                self._advance(slot, req, logits)
        queues = [req.pending if req else [] for req in self._slots]
        take = share_budget([len(q) for q in queues], self.budget)
        if not any(take):
            return
        chunk = [q[:n] for q, n in zip(queues, take)]
        want = [b for b, (q, n) in enumerate(zip(queues, take)) if n and n == len(q)]
        plan = Plan.pack(chunk, want, False)
        gpu = self._gpu_rows(want)
        if gpu:  # decoding slots only: their next tokens are chosen on the GPU, only ids read back
            reqs = [r for r in (self._slots[b] for b in want) if r is not None]  # all are (_gpu_rows)
            plan.sample = np.array([sampling_row(r.sampling, r.sampler.rng) for r in reqs], np.float32)
            plan.allowed = reqs[0].sampler.allowed
        # the runner records the next command buffer while the GPU runs this one
        res = runner.run(self.state, plan)
        self.stats.steps += 1
        for b, n in enumerate(take):
            req = self._slots[b]
            if req is None or not n:
                continue
            was_prefill = not req.tokens
            del req.pending[:n]
            if was_prefill:
                self.stats.prefill_tokens += n
            else:
                self.stats.decode_tokens += n
            if b in res and gpu:
                self._advance(b, req, None, chosen=int(res[b][0]))
            elif b in res:
                logits = res[b][-1]
                if was_prefill and self.cache is not None:
                    self.cache.store(req.prompt, self.state, b, logits)
                self._advance(b, req, logits)

    def _gpu_rows(self, want: list[int]) -> bool:
        """Whether this step's outputs (slots ``want``) are sampled on the GPU: every one is a
        decoding step (not the end of a prompt, whose logits the prefix cache keeps) of a request
        that allows it, all with one allowed-id mask."""
        reqs = [self._slots[b] for b in want]
        if not reqs or any(r is None or not r.gpu or not r.tokens for r in reqs):
            return False
        first = reqs[0].sampler.allowed  # type: ignore[union-attr]
        return all(r.sampler.allowed is first for r in reqs)  # type: ignore[union-attr]

    def _advance(self, slot: int, req: _Request, logits: np.ndarray | None, chosen: int | None = None) -> None:
        """Sample the next token of ``req`` (or take ``chosen``, sampled on the GPU) and decide
        whether it goes on."""
        with self._cv:
            if req.cancelled:
                self._finish(slot, req, "cancelled")
                return
            if len(req.tokens) >= req.max_tokens:
                self._finish(slot, req, "length")
                return
            if chosen is None:
                assert logits is not None
                tok = req.sampler(logits)  # never an id the tokenizer cannot decode; penalties counted
            else:
                tok = chosen
                req.sampler.accept(tok, self.model.info.num_vocab)
            if tok == 0 and req.stop_at_eos:
                self._finish(slot, req, "eos")
                return
            req.tokens.append(tok)
            piece = req.stream.push(tok)
            if piece:
                req.emit(piece)
            if req.stream.stopped:
                self._finish(slot, req, "stop")
            elif len(req.tokens) >= req.max_tokens:
                self._finish(slot, req, "length")
            else:
                req.pending = [tok]
