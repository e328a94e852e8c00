"""Decoding with GPU sampling, kept steps ahead of the host.

A loop of :meth:`Model.forward_sample` leaves the GPU idle while the host reads each id back,
checks it and submits the next step (~0.6-0.9 ms a token on an H100, a fifth of the step). A
:class:`DecodeChain` submits steps k+1 .. k+depth before it reads step k's id: each takes its
token from the ids the step before sampled, gathering the embedding row on the GPU
(ops.embed), so the GPU has work queued while the host reads, and a host that stalls for less
than ``depth - 1`` GPU steps does not leave it idle. ``DEPTH`` is one step ahead: two measured
no faster on the H100's host (docs/performance.md, twelfth round), and a second checkpoint
costs a copy of the state's memory.

Feeding a token before the host has seen it is a guess that the caller keeps it. Where it does
not (an end of text, a stop string), :meth:`DecodeChain.cancel` undoes the steps fed that
way: the state goes back to a checkpoint copied every ``CHECKPOINT`` steps (on the GPU, inside
a step's command buffer; beyond one step ahead the two newest are kept, so that one is never
newer than the oldest step to undo), the tokens fed since are fed again one by one through the
same one-token kernels (so the state is bit-identical to never having fed them), and the
random generators get back the draws the undone steps took. Tokens, state and draws therefore match a plain forward_sample loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, StateError
from .step import Plan, check_slot_count, gpu_sampling_settings, sampling_row

if TYPE_CHECKING:
    from ..state import State
    from .base import Model

CHECKPOINT = 16  # steps between state checkpoints: what cancel() feeds again at most (about)
DEPTH = 1  # chained steps kept in flight beyond the one being read (1 to MAX_DEPTH)
MAX_DEPTH = 3


@dataclass
class _Step:
    """A submitted step: its plan and the generators' states before its draws."""

    plan: Plan
    rng_before: list[tuple[Any, Any]] = field(default_factory=list)


class DecodeChain:
    """Slots of ``state`` decoded together with GPU sampling, steps submitted ahead of the reads.

    ``feed(tokens)`` submits a step that feeds one token per slot that the host knows (the
    first ones); ``next(ahead)`` returns the tokens the oldest submitted step chose (one per
    slot, in ``slots`` order), after submitting, when ``ahead``, the steps that feed them and
    the tokens after (``ahead`` steps in flight after the read: True for ``depth``; the caller
    keeps those tokens, or cancel()s). ``cancel()`` undoes the steps in flight, which fed tokens
    the caller has not kept; ``close()`` waits for whatever is still in flight (its tokens stay
    fed). ``sampling`` and ``rng`` are one for every slot or one per slot (one generator: one
    draw per slot per step, in slot order), as for :meth:`Model.forward_sample_batch`. Create
    with :meth:`Model.decode_chain`. Until ``close()``, the state belongs to the chain: steps run
    on it by other calls would not be seen by the steps in flight.
    """

    def __init__(self, model: Model, state: State, sampling: Any, rng: Any, *, slots: Sequence[int] = (0,),
                 allowed: np.ndarray | None = None, depth: int | None = None):  # fmt: skip
        model.check_state(state)
        self.slots = [int(b) for b in slots]
        if not self.slots or sorted(set(self.slots)) != self.slots:
            raise StateError(f"slots must be distinct and increasing, got {list(slots)}")
        if not 0 <= self.slots[0] <= self.slots[-1] < state.batch_size:
            raise StateError(f"slots {self.slots} are not all inside the state's batch of {state.batch_size}")
        self.depth = DEPTH if depth is None else int(depth)
        if not 1 <= self.depth <= MAX_DEPTH:
            raise ConfigError(f"depth must be 1 to {MAX_DEPTH} steps ahead, got {depth}")
        self.configs, self.rngs = gpu_sampling_settings(model, sampling, rng, len(self.slots), allowed)
        check_slot_count(model, len(self.slots))
        if model.runner.graph(state)[0].captures:
            raise ConfigError("hooks read tensors back after every step; decode with forward_sample instead")
        model.embedding_table()  # uploaded now: a table the adapter cannot bind fails here, not mid-decoding
        self.model, self.state, self.allowed = model, state, allowed
        self.submitted = 0  # steps submitted so far (a step's index is its place in that count)
        # the newest checkpoints (step index, the state before that step), oldest first
        self.checkpoints: deque[tuple[int, State]] = deque()
        self.fed: dict[int, list[int]] = {}  # the tokens each step since the oldest checkpoint fed
        self.spare: State | None = None  # a state made for the next checkpoint, not used yet
        self.inflight: deque[_Step] = deque()
        self.ring = 0
        self.rings = self.depth + 1  # id staging buffers: one per step in flight
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

    def next(self, ahead: bool | int) -> list[int]:
        """The tokens the oldest submitted step chose. With ``ahead`` (True: ``depth``; or a
        number of steps, at most ``depth``), steps are submitted first until that many follow it
        in flight: the one feeding these tokens, then the ones feeding the tokens after, so the
        GPU does not wait for this read. Steps already in flight stay (ahead counts them)."""
        if not self.inflight:
            raise StateError("no step in flight: feed() tokens first")
        want = self.depth if ahead is True else max(0, min(int(ahead), self.depth))
        submitted = False
        while len(self.inflight) < 1 + want:
            self._submit(None)
            submitted = True
        if submitted:
            self._prepare()
        index = self.submitted - len(self.inflight)  # the step read now
        step = self.inflight.popleft()
        tokens = self._read(step.plan)
        self.fed[index + 1] = tokens  # what the step after it feeds (a later feed() replaces it)
        return tokens

    def cancel(self) -> None:
        """Undo the steps still in flight (each fed tokens sampled by the step before, which the
        caller did not keep): the state, and the random generators' draws, end as if those
        tokens had never been fed. The step in flight whose tokens next() returned last is the
        oldest undone."""
        if not self.inflight or not all(s.plan.chained for s in self.inflight):
            raise StateError("nothing to cancel: the last next() did not feed its tokens ahead")
        self.ready = None
        undone = list(self.inflight)
        self.inflight.clear()
        for s in undone:
            self._read(s.plan)
        first = self.submitted - len(undone)  # index of the oldest step undone
        for r, before in undone[0].rng_before:
            r.bit_generator.state = before
        self.submitted = first
        self.ring = undone[0].plan.ring or 0  # (set on every chained plan)
        usable = [c for c in self.checkpoints if c[0] <= first]
        assert usable, "a checkpoint is never newer than the oldest step in flight"
        start, backup = usable[-1]
        while self.checkpoints and self.checkpoints[-1][0] > first:
            self.checkpoints.pop()
        for j in [j for j in self.fed if j >= first]:
            del self.fed[j]
        dev = self.model.device
        enc = dev.device.create_command_encoder()
        backup.encode_copy(enc, self.state)
        dev.queue.submit([enc.finish()])
        for j in range(start, first):  # the same one-token steps as before: the same sums
            self.model.runner.run(self.state, Plan.pack(self._chunk(self.fed[j]), [], False))

    def close(self) -> None:
        """Wait for the steps still in flight (their tokens stay fed)."""
        while self.inflight:
            self._read(self.inflight.popleft().plan)

    def _chunk(self, tokens: Sequence[int]) -> list[list[int]]:
        chunk: list[list[int]] = [[] for _ in range(self.state.batch_size)]
        for b, tok in zip(self.slots, tokens):
            chunk[b] = [tok]
        return chunk

    def _checkpoint_due(self) -> bool:
        """Whether the next step submitted copies the state first (every CHECKPOINT steps, and at
        least ``depth`` steps after the newest checkpoint so that the one before it is never
        newer than the oldest step in flight)."""
        if not self.checkpoints:
            return True
        return self.submitted - self.checkpoints[-1][0] >= max(CHECKPOINT, self.depth)

    def _plan(self, tokens: list[int] | None) -> Plan:
        """The plan of the next step (its ring, and a checkpoint when one is due), without
        changing the chain: what :meth:`_submit` would send now (a checkpoint's copy target is
        set there)."""
        plan = Plan.pack(self._chunk(tokens or [0] * len(self.slots)), self.slots, False)
        plan.chained = tokens is None
        plan.ring = self.ring
        if self._checkpoint_due():
            plan.backup = self._spare_backup()
        return plan

    def _kept(self) -> int:
        """Checkpoints kept: one where a single step is in flight (the newest is never newer than
        it), two beyond (the newest may be; the one before never is)."""
        return 1 if self.depth == 1 else 2

    def _spare_backup(self) -> State:
        """The state a new checkpoint copies into: the oldest kept, else a new one."""
        if len(self.checkpoints) >= self._kept():
            return self.checkpoints[0][1]
        if self.spare is None:
            from ..state import State

            self.spare = State(self.model, self.state.batch_size, self.state.spec, fresh=False)
        return self.spare

    def _prepare(self) -> None:
        """Record the command buffer of the chained step that would follow the ones just
        submitted (its ring, its checkpoint if one falls due): the host's encoding then overlaps
        the GPU's steps instead of following the read."""
        self.ready = None
        if not self.checkpoints:
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
            if early.ring == plan.ring and early.backup is plan.backup:
                plan, cmd = early, early_cmd  # recorded for exactly this step
        self.ready = None
        index = self.submitted
        if self._checkpoint_due():
            backup = plan.backup
            assert backup is not None
            if backup is self.spare:
                self.spare = None
            if len(self.checkpoints) >= self._kept():
                self.checkpoints.popleft()
            self.checkpoints.append((index, backup))
            oldest = self.checkpoints[0][0]
            for j in [j for j in self.fed if j < oldest]:
                del self.fed[j]
        else:
            plan.backup = None
        self.ring = (self.ring + 1) % self.rings
        rng_before = [(r, r.bit_generator.state) for r in {id(r): r for r in self.rngs}.values()]
        plan.sample = np.array([sampling_row(c, r) for c, r in zip(self.configs, self.rngs)], np.float32)
        plan.allowed = self.allowed
        runner = self.model.runner
        runner.submit(self.state, plan, cmd if cmd is not None else runner.encode(self.state, plan))
        self.submitted += 1
        if tokens is not None:
            self.fed[index] = list(tokens)
        self.inflight.append(_Step(plan, rng_before))

    def _read(self, plan: Plan) -> list[int]:
        res = self.model.runner.collect(self.state, plan)
        return [int(res[b][0]) for b in self.slots]
