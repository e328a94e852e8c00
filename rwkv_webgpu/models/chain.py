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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, StateError
from .step import Plan, check_slot_count, gpu_sampling_settings, sampling_row

if TYPE_CHECKING:
    from ..state import State
    from .base import Model

CHECKPOINT = 16  # steps between state checkpoints: what cancel() feeds again at most


class DecodeChain:
    """Slots of ``state`` decoded together with GPU sampling, the next step submitted ahead.

    ``feed(tokens)`` submits a step that feeds one token per slot that the host knows (the
    first ones); ``next(ahead)`` returns the tokens the oldest submitted step chose (one per
    slot, in ``slots`` order), after submitting, when ``ahead``, the step that feeds them (the
    caller keeps them, or cancel()s). ``cancel()`` undoes the speculative step of the last
    ``next(ahead=True)``; ``close()`` waits for whatever is still in flight. ``sampling`` and
    ``rng`` are one for every slot or one per slot (one generator: one draw per slot per step,
    in slot order), as for :meth:`Model.forward_sample_batch`. Create with
    :meth:`Model.decode_chain`. Until ``close()``, the state belongs to the chain: steps run on
    it by other calls would not be seen by the step in flight.
    """

    def __init__(self, model: Model, state: State, sampling: Any, rng: Any, *, slots: Sequence[int] = (0,),
                 allowed: np.ndarray | None = None):  # fmt: skip
        model.check_state(state)
        self.slots = [int(b) for b in slots]
        if not self.slots or sorted(set(self.slots)) != self.slots:
            raise StateError(f"slots must be distinct and increasing, got {list(slots)}")
        if not 0 <= self.slots[0] <= self.slots[-1] < state.batch_size:
            raise StateError(f"slots {self.slots} are not all inside the state's batch of {state.batch_size}")
        self.configs, self.rngs = gpu_sampling_settings(model, sampling, rng, len(self.slots), allowed)
        check_slot_count(model, len(self.slots))
        if model.runner.graph(state)[0].captures:
            raise ConfigError("hooks read tensors back after every step; decode with forward_sample instead")
        model.embedding_table()  # uploaded now: a table the adapter cannot bind fails here, not mid-decoding
        self.model, self.state, self.allowed = model, state, allowed
        self.backup: State | None = None  # the last checkpoint
        self.fed: list[list[int]] = []  # tokens fed per step since the checkpoint ([]: not read yet)
        self.inflight: deque[Plan] = deque()
        self.rng_before: list[tuple[Any, Any]] = []  # (generator, its state before the newest step's draws)
        self.ring = 0
        # the next chained step's plan and command buffer, recorded before next() waits for a
        # read, so that the step after can be submitted as soon as that read returns
        self.ready: tuple[Plan, Any] | None = None

    def feed(self, tokens: Sequence[int]) -> None:
        """Submit the step that feeds ``tokens`` (one per slot, known to the host) and samples
        the next."""
        if self.inflight:
            raise StateError("a step is still in flight: read its tokens with next() first")
        ids = self.model.check_tokens(tokens)
        if len(ids) != len(self.slots):
            raise StateError(f"{len(ids)} tokens for {len(self.slots)} slots")
        self._submit(ids)

    def next(self, ahead: bool) -> list[int]:
        """The tokens the oldest submitted step chose. With ``ahead``, the step that feeds them
        (and samples the ones after) is submitted first, so the GPU does not wait for this read."""
        if not self.inflight:
            raise StateError("no step in flight: feed() tokens first")
        if ahead:
            self._submit(None)
            self._prepare()
        tokens = self._read(self.inflight.popleft())
        if ahead:
            self.fed[-1] = tokens  # the step just submitted feeds them
        return tokens

    def cancel(self) -> None:
        """Undo the step submitted by the last ``next(ahead=True)``: the state, and the random
        generators' draws, end as if those tokens had never been fed."""
        if len(self.inflight) != 1 or not self.inflight[0].chained:
            raise StateError("nothing to cancel: the last next() did not feed its tokens ahead")
        self._read(self.inflight.popleft())
        self.ready = None
        for r, before in self.rng_before:
            r.bit_generator.state = before
        self.fed.pop()
        assert self.backup is not None
        dev = self.model.device
        enc = dev.device.create_command_encoder()
        self.backup.encode_copy(enc, self.state)
        dev.queue.submit([enc.finish()])
        for tokens in self.fed:  # the same one-token steps as before: the same sums
            self.model.runner.run(self.state, Plan.pack(self._chunk(tokens), [], False))

    def close(self) -> None:
        """Wait for the steps still in flight (their tokens stay fed)."""
        while self.inflight:
            self._read(self.inflight.popleft())

    def _chunk(self, tokens: Sequence[int]) -> list[list[int]]:
        chunk: list[list[int]] = [[] for _ in range(self.state.batch_size)]
        for b, tok in zip(self.slots, tokens):
            chunk[b] = [tok]
        return chunk

    def _plan(self, tokens: list[int] | None) -> Plan:
        """The plan of the next step (its ring, and a checkpoint when one is due), without
        changing the chain: what :meth:`_submit` would send now."""
        plan = Plan.pack(self._chunk(tokens or [0] * len(self.slots)), self.slots, False)
        plan.chained = tokens is None
        plan.ring = self.ring
        if self.backup is None or len(self.fed) >= CHECKPOINT:
            plan.backup = self.backup  # (None only before the first step; _submit makes it)
        return plan

    def _prepare(self) -> None:
        """Record the command buffer of the chained step that would follow the one just
        submitted (one step's ring later, its checkpoint if one falls due): the host's encoding
        then overlaps the GPU's step instead of following the read."""
        self.ready = None
        if self.backup is None:
            return
        plan = self._plan(None)
        # a sampling step (the command buffer depends on that, not on the values, which
        # _submit draws and writes when it sends the step)
        plan.sample = np.zeros((len(self.slots), 4), np.float32)
        self.ready = (plan, self.model.runner.encode(self.state, plan))

    def _submit(self, tokens: list[int] | None) -> None:
        """Submit one step: feed ``tokens``, or (None) the ids the previous step sampled (the
        step's i-th token is the previous step's i-th sampled row: both follow ``slots``)."""
        plan = self._plan(tokens)
        cmd = None
        if tokens is None and self.ready is not None:
            early, early_cmd = self.ready
            if early.ring == plan.ring and (early.backup is None) == (plan.backup is None):
                plan, cmd = early, early_cmd  # recorded for exactly this step
        self.ready = None
        self.ring ^= 1
        if self.backup is None or len(self.fed) >= CHECKPOINT:
            if self.backup is None:
                from ..state import State

                self.backup = State(self.model, self.state.batch_size, self.state.spec, fresh=False)
            plan.backup = self.backup
            self.fed = []
        self.rng_before = [(r, r.bit_generator.state) for r in {id(r): r for r in self.rngs}.values()]
        plan.sample = np.array([sampling_row(c, r) for c, r in zip(self.configs, self.rngs)], np.float32)
        plan.allowed = self.allowed
        runner = self.model.runner
        runner.submit(self.state, plan, cmd if cmd is not None else runner.encode(self.state, plan))
        self.fed.append(tokens or [])
        self.inflight.append(plan)

    def _read(self, plan: Plan) -> list[int]:
        res = self.model.runner.collect(self.state, plan)
        return [int(res[b][0]) for b in self.slots]
