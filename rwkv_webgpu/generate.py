"""Text generation on top of Model.forward: streaming deltas that never split a UTF-8 character."""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .errors import RWKVError, TokenError
from .sampling import SamplingConfig, sample

if TYPE_CHECKING:
    from .models.base import Model
    from .state import State


def generate_stream(
    model: Model,
    prompt: str | Sequence[int],
    *,
    max_tokens: int = 100,
    sampling: SamplingConfig | None = None,
    state: State | None = None,
    stop_at_eos: bool = True,
) -> Iterator[str]:
    """Yield text pieces as tokens are generated after ``prompt`` (text, or token ids).

    The ``state`` (default: a fresh one) is advanced in place, so a caller can continue later.
    Token 0 (end of text) stops generation when ``stop_at_eos``.
    """
    tok = model.tokenizer
    if isinstance(prompt, str):
        if tok is None:
            raise RWKVError("this model has no tokenizer: pass token ids, or load it with tokenizer=PATH")
        ids = tok.encode(prompt)
        if not ids:
            raise TokenError("the prompt encodes to no tokens: give some text")
    else:
        ids = list(prompt)
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    cfg = sampling or SamplingConfig()
    rng = np.random.default_rng(cfg.seed)
    st = state if state is not None else model.new_state()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    logits = model.forward(ids, st)
    for _ in range(max_tokens):
        nxt = sample(logits, cfg, rng)
        if nxt == 0 and stop_at_eos:
            break
        if tok is not None:
            piece = decoder.decode(tok.decode_bytes([nxt]))
            if piece:
                yield piece
        else:
            yield f"{nxt} "
        logits = model.forward([nxt], st)
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


def generate(model: Model, prompt: str | Sequence[int], **kwargs: object) -> str:
    """The whole generated text (see :func:`generate_stream` for the arguments)."""
    return "".join(generate_stream(model, prompt, **kwargs))  # type: ignore[arg-type]
