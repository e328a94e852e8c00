"""Decoding with GPU sampling, kept one step ahead of the host.

A loop of :meth:`Model.forward_sample` leaves the GPU idle while the host reads each id back,
checks it and submits the next step (~0.6-0.9 ms a token on an H100, a fifth of the step). A
:class:`DecodeChain` submits step k+1 before it reads step k's id: step k+1 takes its token
from the ids step k sampled, gathering the embedding row on the GPU (ops.embed), so the GPU
always has the next step queued.

Feeding a token before the host has seen it is a guess that the caller keeps it. Where it does
not (an end-of-text token), :meth:`DecodeChain.cancel` undoes it: the state goes back to a
checkpoint copied every ``CHECKPOINT`` steps (on the GPU, inside a step's command buffer), the
tokens fed since are fed again one by one through the same one-token kernels (so the state is
bit-identical to never having fed it), and the random generator gets back the draw the
speculative step took. Tokens, state and draws therefore match a plain forward_sample loop.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, StateError
from .step import Plan, check_gpu_sampling, sampling_row

if TYPE_CHECKING:
    from ..state import State
    from .base import Model

CHECKPOINT = 16  # steps between state checkpoints: what cancel() feeds again at most


class DecodeChain:
    """One slot of ``state`` decoded with GPU sampling, the next step submitted ahead.

    ``feed(token)`` submits a step that feeds a token the host knows (the first one);
    ``next(ahead)`` returns the token the oldest submitted step chose, after submitting, when
    ``ahead``, the step that feeds that token (the caller promises to keep it or cancel()).
    ``cancel()`` undoes the speculative step of the last ``next(ahead=True)``; ``close()``
    waits for whatever is still in flight. Create with :meth:`Model.decode_chain`.
    """

    def __init__(self, model: Model, state: State, sampling: Any, rng: np.random.Generator, *, slot: int = 0,
                 allowed: np.ndarray | None = None):  # fmt: skip
        model.check_state(state)
        if not 0 <= slot < state.batch_size:
            raise StateError(f"slot {slot} is outside the state's batch of {state.batch_size}")
        check_gpu_sampling(model, [sampling], allowed)
        if model.runner.graph(state)[0].captures:
            raise ConfigError("hooks read tensors back after every step; decode with forward_sample instead")
        self.model, self.state, self.slot = model, state, slot
        self.sampling, self.rng, self.allowed = sampling, rng, allowed
        self.backup: State | None = None  # the last checkpoint
        self.fed: list[int] = []  # tokens fed since the checkpoint (-1: chosen on the GPU, not read yet)
        self.inflight: deque[Plan] = deque()
        self.rng_before: Any = None  # the generator's state before the newest step's draw
        self.ring = 0

    def feed(self, token: int) -> None:
        """Submit the step that feeds ``token`` (known to the host) and samples the next."""
        if self.inflight:
            raise StateError("a step is still in flight: read its token with next() first")
        (tok,) = self.model.check_tokens([token])
        self._submit(tok)

    def next(self, ahead: bool) -> int:
        """The token the oldest submitted step chose. With ``ahead``, the step that feeds it (and
        samples the one after) is submitted first, so the GPU does not wait for this read."""
        if not self.inflight:
            raise StateError("no step in flight: feed() a token first")
        if ahead:
            self._submit(None)
        plan = self.inflight.popleft()
        token = self._read(plan)
        if ahead:
            self.fed[-1] = token  # the step just submitted feeds it
        return token

    def cancel(self) -> None:
        """Undo the step submitted by the last ``next(ahead=True)``: the state, and the random
        generator's draw, end as if that token had never been fed."""
        if len(self.inflight) != 1 or not self.inflight[0].chained:
            raise StateError("nothing to cancel: the last next() did not feed its token ahead")
        self._read(self.inflight.popleft())
        self.rng.bit_generator.state = self.rng_before
        self.fed.pop()
        assert self.backup is not None
        dev = self.model.device
        enc = dev.device.create_command_encoder()
        self.backup.encode_copy(enc, self.state)
        dev.queue.submit([enc.finish()])
        for tok in self.fed:  # the same one-token steps as before: the same sums
            chunk: list[list[int]] = [[] for _ in range(self.state.batch_size)]
            chunk[self.slot] = [tok]
            self.model.runner.run(self.state, Plan.pack(chunk, [], False))

    def close(self) -> None:
        """Wait for the steps still in flight (their tokens stay fed)."""
        while self.inflight:
            self._read(self.inflight.popleft())

    def _submit(self, token: int | None) -> None:
        """Submit one step: feed ``token``, or (None) the id the previous step sampled."""
        chunk: list[list[int]] = [[] for _ in range(self.state.batch_size)]
        chunk[self.slot] = [0 if token is None else token]
        plan = Plan.pack(chunk, [self.slot], False)
        plan.chained = token is None
        plan.ring, self.ring = self.ring, self.ring ^ 1
        if self.backup is None or len(self.fed) >= CHECKPOINT:
            if self.backup is None:
                from ..state import State

                self.backup = State(self.model, self.state.batch_size, self.state.spec, fresh=False)
            plan.backup = self.backup
            self.fed = []
        self.rng_before = self.rng.bit_generator.state
        plan.sample = np.array([sampling_row(self.sampling, self.rng)], np.float32)
        plan.allowed = self.allowed
        runner = self.model.runner
        runner.submit(self.state, plan, runner.encode(self.state, plan))
        self.fed.append(-1 if token is None else token)
        self.inflight.append(plan)

    def _read(self, plan: Plan) -> int:
        return int(self.model.runner.collect(self.state, plan)[self.slot][0])
