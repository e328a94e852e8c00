"""Text generation on top of :meth:`Model.forward`, one sequence at a time.

Text comes out through :class:`~rwkv_webgpu.text.TextStream`: a multi-byte UTF-8 character is never
split, stop strings are matched literally (also across tokens), text that could still become a stop
string is held back, and the stop string itself is never emitted. For many concurrent requests use
:class:`rwkv_webgpu.runtime.Engine`.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from .errors import ConfigError, GPUMemoryError, RWKVError, TokenError
from .sampling import Sampler, SamplingConfig, gpu_unsupported
from .text import TextStream

if TYPE_CHECKING:
    from .cache import PrefixCache
    from .models.base import Model
    from .models.chain import DecodeChain
    from .state import State

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "eos", "length"]


@dataclass
class GenerationResult:
    """A finished generation.

    ``finish_reason`` is "stop" (a stop string was generated: ``text`` ends before it), "eos"
    (the model emitted token 0) or "length" (``max_tokens`` reached). ``tokens`` are the generated
    ids (the end-of-text token excluded), all of them fed to the state. ``cached_tokens`` of the
    ``prompt_tokens`` came from the prefix cache instead of being processed.
    """

    text: str
    tokens: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


class IdText:
    """Stands in for a tokenizer when a model has none: token ``i`` reads as ``"i "``."""

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return "".join(f"{int(i)} " for i in ids).encode()


def prompt_ids(model: Model, prompt: str | Sequence[int]) -> list[int]:
    """Token ids of ``prompt`` (text is encoded with the model's tokenizer)."""
    if isinstance(prompt, str):
        if model.tokenizer is None:
            raise RWKVError(
                "this model has no tokenizer: pass token ids, or load it with tokenizer=PATH"
            )
        ids = list(model.tokenizer.encode(prompt))
        if not ids:
            raise TokenError("the prompt encodes to no tokens: give some text")
        return ids
    ids = [int(t) for t in prompt]
    if not ids:
        raise TokenError("empty prompt: give at least one token")
    return ids


def prefill(
    model: Model, ids: Sequence[int], state: State, cache: PrefixCache | None = None
) -> tuple[np.ndarray, int]:
    """Feed ``ids`` to slot 0 of ``state``; return (last-token logits, tokens taken from ``cache``).

    With a cache, the longest cached prefix is restored into the state (the slot starts from the
    model's initial state, whatever it held), only the rest is processed, and the state after the
    whole prompt is stored for next time.
    """
    if cache is None:
        return model.forward(ids, state), 0
    cached, logits = cache.restore(ids, state, 0)
    if cached < len(ids) or logits is None:
        logits = model.forward(ids[cached:], state)
        cache.store(ids, state, 0, logits)
    return logits, cached


class GenerationStream:
    """Iterate for text deltas; afterwards :attr:`result` holds the :class:`GenerationResult`.

    Nothing runs until the first ``next()``. Each generated token is fed to ``state`` before its
    text is yielded, so at every yield the state holds the prompt and ``tokens``.
    """

    def __init__(
        self,
        model: Model,
        state: State,
        *,
        prompt: Sequence[int] = (),
        logits: np.ndarray | None = None,
        sampler: Sampler | None = None,
        max_tokens: int = 100,
        stop: Sequence[str] = (),
        stop_at_eos: bool = True,
        cache: PrefixCache | None = None,
        prompt_tokens: int | None = None,
        gpu_sampling: bool | None = None,
    ):
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        if logits is None and not prompt:
            raise TokenError("empty prompt: give at least one token (or the logits to start from)")
        if isinstance(stop, str):
            stop = [stop]
        self.model = model
        self.state = state
        self.sampler = sampler or Sampler.for_model(model)
        self.max_tokens = max_tokens
        self.stop_at_eos = stop_at_eos
        self.tokens: list[int] = []
        self._prompt = list(prompt)
        self._logits = logits
        self._cache = cache
        self._prompt_tokens = len(self._prompt) if prompt_tokens is None else prompt_tokens
        self._cached = 0
        self._text = TextStream(model.tokenizer if model.tokenizer is not None else IdText(), stop)
        self._result: GenerationResult | None = None
        self.gpu_sampling = use_gpu_sampling(model, self.sampler, gpu_sampling)
        self._run = self._generate()

    @property
    def text(self) -> str:
        """The text emitted so far."""
        return self._text.text

    @property
    def done(self) -> bool:
        return self._result is not None

    @property
    def result(self) -> GenerationResult:
        """The result; runs the generation to its end first if it has not finished."""
        if self._result is None:
            for _ in self:
                pass
        if self._result is None:
            raise RWKVError("this generation was closed before it finished: it has no result")
        return self._result

    def close(self) -> None:
        """Stop generating (the state keeps the tokens generated so far)."""
        self._run.close()

    def __iter__(self) -> GenerationStream:
        return self

    def __next__(self) -> str:
        return next(self._run)

    def _generate(self) -> Generator[str, None, None]:
        logits = self._logits
        if logits is None:
            logits, self._cached = prefill(self.model, self._prompt, self.state, self._cache)
        reason: FinishReason = "length"
        chosen: int | None = None  # the next token, when the GPU chose it in the last step
        sampler, vocab = self.sampler, self.model.info.num_vocab
        chain = self._chain()
        try:
            while len(self.tokens) < self.max_tokens:
                if chosen is None:
                    token = sampler(logits)
                else:
                    token = chosen
                    sampler.accept(token, vocab)
                if token == 0 and self.stop_at_eos:
                    if chain is not None and chain.inflight:
                        chain.cancel()  # the steps ahead fed the end of text (and after): undo them
                    reason = "eos"
                    break
                self.tokens.append(token)
                if self.gpu_sampling and len(self.tokens) < self.max_tokens:
                    # feed the token and choose the next on the GPU: only its id comes back
                    if chain is None:
                        chosen = self.model.forward_sample([token], self.state, sampler.config, sampler.rng,
                                                           allowed=sampler.allowed)  # fmt: skip
                    else:
                        if not chain.inflight:  # else the step feeding it was submitted ahead
                            chain.feed([token])
                        # submit the steps after it too (up to the chain's depth), as many as
                        # tokens are still to be fed: the token about to be read is the last when
                        # max_tokens is reached
                        (chosen,) = chain.next(ahead=self.max_tokens - len(self.tokens) - 1)
                else:
                    logits = self.model.forward([token], self.state)
                    chosen = None
                piece = self._text.push(token)
                if piece:
                    yield piece
                if self._text.stopped:
                    if chain is not None and chain.inflight:
                        chain.cancel()  # the steps ahead fed tokens after the stop: undo them
                    reason = "stop"
                    break
        finally:
            if chain is not None:
                chain.close()
        tail = self._text.finish()
        self._result = GenerationResult(
            self._text.text,
            list(self.tokens),
            reason,
            self._prompt_tokens,
            len(self.tokens),
            self._cached,
        )
        if tail:
            yield tail

    def _chain(self) -> DecodeChain | None:
        """The GPU decoding loop kept steps ahead (models/chain.py), where GPU sampling is on and
        no hook reads tensors back after each step."""
        if not self.gpu_sampling or self.model.hooks.hooks:
            return None
        s = self.sampler
        try:
            return self.model.decode_chain(self.state, s.config, s.rng, allowed=s.allowed)
        except GPUMemoryError as exc:  # the embedding does not fit the adapter: one step at a time
            log.info("decoding without the step ahead: %s", exc)
            return None


def use_gpu_sampling(model: Model, sampler: Any, wanted: bool | None) -> bool:
    """Whether a generation chooses its tokens on the GPU (after the first: the prompt's logits
    are sampled on the host). ``wanted`` None: where the sampler is a plain :class:`Sampler`
    (not a plugin's sampler or a subclass with its own choice), its settings allow it and the
    adapter is a real GPU (on CPU adapters numpy samples faster than the kernel); True insists
    (ConfigError if a setting needs the host); False never."""
    if wanted is False:
        return False
    if not isinstance(sampler, Sampler):
        if wanted:
            raise ConfigError(f"gpu_sampling=True needs a rwkv_webgpu.Sampler (its settings, random stream and "
                              f"allowed ids go to the GPU), not {type(sampler).__name__}")  # fmt: skip
        return False
    unsupported = gpu_unsupported(sampler.config)
    if wanted:
        if unsupported:
            raise ConfigError(f"gpu_sampling=True, but these settings need the host sampler: {unsupported}")
        return True
    device = getattr(model, "device", None)  # stand-ins for a model (tests) have none
    own_rule = type(sampler).__call__ is not Sampler.__call__
    return not (unsupported or own_rule) and device is not None and not device.info.cpu


def generate_stream(
    model: Model,
    prompt: str | Sequence[int],
    *,
    sampling: SamplingConfig | None = None,
    sampler: Sampler | None = None,
    max_tokens: int = 100,
    stop: Sequence[str] = (),
    state: State | None = None,
    cache: PrefixCache | None = None,
    stop_at_eos: bool = True,
    gpu_sampling: bool | None = None,
) -> GenerationStream:
    """Generate after ``prompt`` (text, or token ids), yielding text deltas as they are safe to show.

    Args:
        sampling: how tokens are chosen (default :class:`SamplingConfig()`); ids the tokenizer
            cannot decode are never chosen.
        sampler: a :class:`Sampler` to use instead (keeps its random stream and penalty counts).
        max_tokens: most tokens to generate.
        stop: literal strings that end generation; the text stops right before the first one.
        state: advanced in place (default: a fresh one), so a caller can continue from it.
        cache: a :class:`PrefixCache`: the longest cached prefix of the prompt is restored
            instead of processed (the state then starts from the model's initial state), and
            the state after the prompt is stored.
        stop_at_eos: end at token 0 (end of text).
        gpu_sampling: choose tokens on the GPU, reading back only their ids (temperature, top_p
            and top_k; the same rule as the host sampler, in f32). None (default): where the
            sampling settings allow it and the adapter is a GPU; True: always (ConfigError if a
            setting such as a penalty needs the host); False: on the host from the logits.

    The returned stream's ``result`` is the :class:`GenerationResult` once it is exhausted.
    """
    if sampling is not None and sampler is not None:
        raise ValueError("give sampling or sampler, not both")
    ids = prompt_ids(model, prompt)
    return GenerationStream(
        model,
        state if state is not None else model.new_state(),
        prompt=ids,
        sampler=sampler or Sampler.for_model(model, sampling),
        max_tokens=max_tokens,
        stop=stop,
        stop_at_eos=stop_at_eos,
        cache=cache,
        gpu_sampling=gpu_sampling,
    )


@overload
def generate(
    model: Model,
    prompt: str | Sequence[int],
    *,
    sampling: SamplingConfig | None = ...,
    sampler: Sampler | None = ...,
    max_tokens: int = ...,
    stop: Sequence[str] = ...,
    state: State | None = ...,
    cache: PrefixCache | None = ...,
    stop_at_eos: bool = ...,
    gpu_sampling: bool | None = ...,
    return_result: Literal[False] = ...,
) -> str: ...
@overload
def generate(
    model: Model,
    prompt: str | Sequence[int],
    *,
    sampling: SamplingConfig | None = ...,
    sampler: Sampler | None = ...,
    max_tokens: int = ...,
    stop: Sequence[str] = ...,
    state: State | None = ...,
    cache: PrefixCache | None = ...,
    stop_at_eos: bool = ...,
    gpu_sampling: bool | None = ...,
    return_result: Literal[True],
) -> GenerationResult: ...
def generate(
    model: Model,
    prompt: str | Sequence[int],
    *,
    sampling: SamplingConfig | None = None,
    sampler: Sampler | None = None,
    max_tokens: int = 100,
    stop: Sequence[str] = (),
    state: State | None = None,
    cache: PrefixCache | None = None,
    stop_at_eos: bool = True,
    gpu_sampling: bool | None = None,
    return_result: bool = False,
) -> str | GenerationResult:
    """The generated text (or, with ``return_result=True``, a :class:`GenerationResult`).

    Arguments as for :func:`generate_stream`.
    """
    stream = generate_stream(
        model, prompt, sampling=sampling, sampler=sampler, max_tokens=max_tokens, stop=stop,
        state=state, cache=cache, stop_at_eos=stop_at_eos, gpu_sampling=gpu_sampling,
    )  # fmt: skip
    result = stream.result
    return result if return_result else result.text
