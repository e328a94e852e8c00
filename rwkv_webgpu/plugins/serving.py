"""Models served to the integrations (LangChain, llama-index, llm): a model name resolved through
the plugins, loaded once per process, with one continuous-batching engine and prefix cache.

Requests with the engine's own sampling run concurrently through the engine. Requests that need a
:class:`~rwkv_webgpu.sampling.Sampler` the engine cannot run (a plugin sampler, repetition
penalties), embeddings and state save/load use the model directly: they wait for the engine's
requests to finish and hold new ones back meanwhile (a readers-writer lock), because a model's
step runner serves one caller at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import RWKVError
from .manager import ModelSource, get_plugins

log = logging.getLogger(__name__)


class Outcome(Protocol):
    """What a finished request reports (:class:`~rwkv_webgpu.runtime.Completion` or
    :class:`~rwkv_webgpu.generate.GenerationResult`)."""

    @property
    def text(self) -> str: ...
    @property
    def tokens(self) -> list[int]: ...
    @property
    def finish_reason(self) -> str: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...


@dataclass(frozen=True)
class Request:
    """One generation: prompt ids, limits and how tokens are chosen."""

    prompt: list[int]
    max_tokens: int = 256
    sampling: Any = None  # SamplingConfig; None: its defaults
    stop: tuple[str, ...] = ()
    sampler: str = "default"  # a registered sampler's name
    stop_at_eos: bool = True


def chat_segments(turns: Sequence[tuple[str, str]], fmt: Any = None) -> list[str]:
    """The RWKV chat prompt ``User: ...\n\nAssistant: ...\n\nUser: ...\n\nAssistant:`` for
    ``(role, text)`` turns (roles "system", "user", "assistant" or any other name), in pieces to
    tokenize one by one: a conversation's next prompt then starts with exactly the tokens of its
    previous one, and the prefix cache restores that state instead of recomputing it."""
    from ..chat import ChatFormat

    fmt = fmt or ChatFormat()
    sep = fmt.separator
    out: list[str] = []
    for role, raw in turns:
        text = re.sub(r"\n\s*\n", "\n", raw.strip())  # a blank line inside would end the turn
        if role == "system":
            out.append(f"{text}{sep}")
        elif role == "assistant":
            out += [f"{fmt.assistant}:", f" {text}{sep}"]
        else:
            name = fmt.user if role == "user" else role.capitalize()
            out.append(f"{name}: {text}{sep}")
    out.append(f"{fmt.assistant}:")
    return out


def chat_stops(fmt: Any = None) -> tuple[str, ...]:
    """Where the assistant's turn ends (the chat format's stop strings)."""
    from ..chat import ChatFormat

    return tuple((fmt or ChatFormat()).stop)


def resolve(
    model: str | os.PathLike[str] | None, tokenizer: str | None = None
) -> tuple[str, ModelSource]:
    """``(model id, source)`` for a registered model name ("demo" when None) or a checkpoint path."""
    name = "demo" if model is None else os.fspath(model)
    source = get_plugins().model_source(name)
    if source is None:
        if not Path(name).is_file():
            hint = (
                "the bundled demo model is not in this install"
                if name == "demo"
                else "no such file"
            )
            raise RWKVError(f"unknown model {name!r}: not a registered model name and {hint}")
        source = ModelSource(name)
    if tokenizer is not None:
        source = ModelSource(source.path, tokenizer, source.description)
    return name, source


class SharedLock:
    """Many shared holders or one exclusive holder; a waiting exclusive holder goes first."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    def acquire_shared(self) -> None:
        with self._cv:
            self._cv.wait_for(lambda: not self._exclusive and not self._waiting)
            self._shared += 1

    def release_shared(self) -> None:
        with self._cv:
            self._shared -= 1
            self._cv.notify_all()

    def acquire_exclusive(self) -> None:
        with self._cv:
            self._waiting += 1
            self._cv.wait_for(lambda: not self._exclusive and not self._shared)
            self._waiting -= 1
            self._exclusive = True

    def release_exclusive(self) -> None:
        with self._cv:
            self._exclusive = False
            self._cv.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        self.acquire_exclusive()
        try:
            yield
        finally:
            self.release_exclusive()


class Generation:
    """A running request: iterate for text pieces; then :attr:`outcome` tells how it ended.

    Closing it early (``close()``, or dropping the iterator) cancels the request.
    """

    def __init__(self, pieces: Iterator[str], done: Callable[[], Outcome]):
        self._pieces = pieces
        self._done = done

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def close(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    @property
    def outcome(self) -> Outcome:
        """The finished request (iterate to the end first)."""
        return self._done()


class ServedModel:
    """A loaded model with its engine, prefix cache and lock, shared by every integration object
    that names the same model. Get one with :func:`served_model`."""

    def __init__(self, model_id: str, model: Any, *, max_batch: int = 4):
        from ..cache import PrefixCache
        from ..runtime import Engine

        self.model_id = model_id
        self.model = model
        self.cache = PrefixCache(model)
        self.engine = Engine(model, max_batch=max_batch, cache=self.cache)
        self.lock = SharedLock()
        self._scratch: Any = None  # a one-slot state for embeddings

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self.model.tokenizer.encode(text)) if text else []

    def chat_ids(self, turns: Sequence[tuple[str, str]]) -> list[int]:
        """Token ids of the chat prompt for ``(role, text)`` turns (see :func:`chat_segments`)."""
        return [t for seg in chat_segments(turns) for t in self.encode(seg)]

    def _direct(self, req: Request) -> bool:
        """Whether ``req`` needs the model directly: the engine runs only the default sampler."""
        return req.sampler != "default"

    # -- generation --------------------------------------------------------------------------
    def start(self, req: Request) -> Generation:
        """Start ``req``; generation runs as the returned :class:`Generation` is iterated."""
        if self._direct(req):
            return self._start_direct(req)
        self.lock.acquire_shared()
        try:
            handle = self.engine.submit(req.prompt, max_tokens=req.max_tokens, sampling=req.sampling,
                                        stop=req.stop, stop_at_eos=req.stop_at_eos)  # fmt: skip
        except BaseException:
            self.lock.release_shared()
            raise

        def pieces() -> Iterator[str]:
            try:
                yield from handle
            finally:
                handle.cancel()  # a no-op once finished
                self.lock.release_shared()

        return Generation(pieces(), handle.result)

    def _start_direct(self, req: Request) -> Generation:
        from ..generate import generate_stream

        factory = get_plugins().sampler(req.sampler)
        result: list[Outcome] = []

        def pieces() -> Iterator[str]:
            with self.lock.exclusive():
                sampler = factory(self.model, req.sampling)
                stream = generate_stream(self.model, req.prompt, sampler=sampler, max_tokens=req.max_tokens,
                                         stop=req.stop, cache=self.cache, stop_at_eos=req.stop_at_eos)  # fmt: skip
                yield from stream
                result.append(stream.result)

        def done() -> Outcome:
            if not result:
                raise RWKVError("the generation was closed before it finished")
            return result[0]

        return Generation(pieces(), done)

    async def astart(self, req: Request) -> tuple[AsyncGenerator[str, None], Callable[[], Outcome]]:
        """Like :meth:`start` from a coroutine: the GPU work and every wait stay off the event loop."""
        if self._direct(req):
            gen = self.start(req)
            return _in_thread(iter(gen)), lambda: gen.outcome
        await asyncio.to_thread(self.lock.acquire_shared)
        try:
            handle = self.engine.submit(req.prompt, max_tokens=req.max_tokens, sampling=req.sampling,
                                        stop=req.stop, stop_at_eos=req.stop_at_eos)  # fmt: skip
        except BaseException:
            self.lock.release_shared()
            raise

        async def pieces() -> AsyncGenerator[str, None]:
            try:
                async for piece in handle:
                    yield piece
            finally:
                handle.cancel()
                self.lock.release_shared()

        return pieces(), handle.result

    # -- embeddings and states ---------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """The final normalised hidden state of each text, ``(C,)`` each."""
        out = []
        with self.lock.exclusive():
            if (
                self._scratch is None
            ):  # one state for all: the step runner records a graph per state
                self._scratch = self.model.new_state()
            for text in texts:
                ids = self.encode(text) or [0]  # the empty text: the end-of-text token's state
                self._scratch.reset()
                out.append([float(v) for v in self.model.embed(ids, self._scratch)])
        return out

    def save_state(self, tokens: Sequence[int], location: str, store: str = "file") -> str:
        """Save the conversation state after ``tokens`` (restored from the prefix cache where it can).

        The state stored is the one before the last token, which is recorded as pending: loading
        feeds it again, which gives the logits a prefix-cache entry needs.
        """
        from ..generate import prefill

        ids = [int(t) for t in tokens]
        if not ids:
            raise RWKVError("nothing to save: give the tokens whose state to save")
        plugins = get_plugins()
        with self.lock.exclusive():
            state = self.model.new_state()
            if len(ids) > 1:
                prefill(self.model, ids[:-1], state, self.cache)
            where = str(plugins.state_store(store).save(state, location, ids, pending=1))
        plugins.emit("state_saved", model_id=self.model_id, location=where, tokens=ids)
        return where

    def load_state(self, location: str, store: str = "file") -> list[int]:
        """Load a saved state into the prefix cache, so a prompt that starts with its tokens starts
        from it. Returns those tokens."""
        plugins = get_plugins()
        with self.lock.exclusive():
            loaded: tuple[Any, list[int], int] = plugins.state_store(store).load(
                self.model, location
            )
            state, ids, pending = loaded
            if not 0 < pending <= len(ids):
                raise RWKVError(
                    f"{location}: a state to resume needs its last token pending (got {pending} of {len(ids)})"
                )
            logits = self.model.forward(ids[len(ids) - pending :], state)
            self.cache.store(ids, state, 0, logits)
        plugins.emit("state_loaded", model_id=self.model_id, location=str(location), tokens=ids)
        return ids

    def close(self) -> None:
        self.engine.close()


def _in_thread(items: Iterator[str]) -> AsyncGenerator[str, None]:
    """Iterate a blocking iterator on a worker thread, one item at a time."""
    end = object()

    async def run() -> AsyncGenerator[str, None]:
        try:
            while True:
                item = await asyncio.to_thread(next, items, end)
                if item is end:
                    return
                yield item  # type: ignore[misc]
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                await asyncio.to_thread(close)

    return run()


_served: dict[tuple[str, str | None, str | None, str], ServedModel] = {}
_served_lock = threading.Lock()


def served_model(model: str | os.PathLike[str] | None = None, *, tokenizer: str | None = None,
                 adapter: str | None = None, max_batch: int = 4, quant: Any = None) -> ServedModel:  # fmt: skip
    """The process-wide :class:`ServedModel` for ``model`` (a registered name, "demo" when None, or
    a checkpoint path), loading it on first use through the plugins' model loaders. ``quant`` is
    :func:`rwkv_webgpu.load_model`'s (a kind or a mix); the same file quantized differently is
    another served model."""
    from ..weights.quant import QuantPlan

    plan = QuantPlan.parse(quant)
    model_id, source = resolve(model, tokenizer)
    key = (os.path.realpath(source.path), source.tokenizer, adapter, str(plan))
    with _served_lock:
        found = _served.get(key)
        if found is None:
            plugins = get_plugins()
            loader = plugins.loader_for(source.path)
            log.info("loading %s with the %s loader", source.path, loader.name)
            # a tokenizer registered by a plugin is made by its factory, anything else by the loader
            named = source.tokenizer in plugins.tokenizers() and source.tokenizer != "world"
            options = {"quant": plan} if plan else {}  # loaders that cannot quantize still load the rest
            try:
                loaded = loader.load(
                    source.path, tokenizer=None if named else source.tokenizer, adapter=adapter, **options
                )
            except TypeError as exc:
                if options and "quant" in str(exc):
                    raise RWKVError(f"the {loader.name!r} model loader cannot quantize ({source.path}): {exc}") from None
                raise
            if named:
                loaded.tokenizer = plugins.tokenizer(str(source.tokenizer))
            if loaded.tokenizer is None:
                raise RWKVError(
                    f"{source.path} has no tokenizer: pass tokenizer=PATH (a tokenizer.json or vocab file)"
                )
            plugins.attach_hooks(loaded, model_id)
            found = _served[key] = ServedModel(model_id, loaded, max_batch=max_batch)
        return found


def release_models() -> None:
    """Close every served model's engine and forget them (the next use loads again)."""
    with _served_lock:
        for served in _served.values():
            served.close()
        _served.clear()
