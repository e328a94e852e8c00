"""What every RWKV version shares: embed -> blocks -> head, the step runner, validation.

A version module subclasses :class:`Model` and supplies only its weights (``load_layers``),
its state layout (``state_spec``) and how one block is recorded (``record_layer``).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import ModelInfo
from ..errors import StateError, TokenError
from ..gpu import Act, Counter, Device, Graph, Matrix, act_buffer, upload_matrix
from ..ops import add_mul, layer_norm, matmul, token_mix, token_store
from ..state import State, StateSpec

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
LN_EPS = 1e-5


class VectorPack:
    """Small per-layer float vectors concatenated into one f32 buffer; ``off[name]`` is the offset."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.off: dict[str, int] = {}
        self.size = 0

    def add(self, name: str, values: np.ndarray) -> int:
        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        self.off[name] = self.size
        self.parts.append(flat)
        self.size += flat.size
        return self.off[name]

    def upload(self, device: Device, label: str) -> Any:
        return device.upload(np.concatenate(self.parts) if self.parts else np.zeros(4, np.float32), label)


@dataclass
class Step:
    """What one submission computes: tokens of several slots packed in slot order."""

    tokens: np.ndarray  # [T] int
    cursors: np.ndarray  # u32 [2B + T]: (start, len) per slot, then the slot of each token
    out_rows: list[tuple[int, int]] = field(default_factory=list)  # (first row of x, rows) copied to the head


class Buffers:
    """Activations shared by every layer of one graph (sized for ``tmax`` tokens)."""

    def __init__(self, model: Model, tmax: int, slots: int):
        dev, c = model.device, model.info.num_emb
        self.tmax, self.slots = tmax, slots
        self.head_rows = max(tmax, slots)
        self.tokens = Counter(dev, "count.tokens")
        self.out = Counter(dev, "count.out")
        self.cursors = dev.storage((2 * slots + tmax) * 4, "cursors")
        self.xin = act_buffer(dev, tmax, c, "x.embed")
        self.x = act_buffer(dev, tmax, c, "x")
        self.xn = act_buffer(dev, tmax, c, "x.norm")
        self.hx = act_buffer(dev, self.head_rows, c, "head.x")
        self.hn = act_buffer(dev, self.head_rows, c, "head.norm")
        self.logits = act_buffer(dev, self.head_rows, model.info.num_vocab, "logits")
        self.staging = dev.staging(self.head_rows * model.info.num_vocab * 4, "logits.staging")


class Model:
    """A loaded RWKV model on one WebGPU device. Use :func:`rwkv_webgpu.load_model` to create one."""

    def __init__(self, info: ModelInfo, device: Device, *, token_chunk_size: int = 128):
        if token_chunk_size < 1:
            raise ValueError(f"token_chunk_size must be >= 1, got {token_chunk_size}")
        self.info = info
        self.device = device
        self.token_chunk_size = token_chunk_size
        self.tokenizer: Any = None
        self.emb: np.ndarray = np.zeros((0, 0), np.float32)
        self.head: Matrix | None = None
        self.vec: Any = None  # global vectors: ln0, ln_out
        self.voff: dict[str, int] = {}
        self._graphs: weakref.WeakKeyDictionary[State, tuple[Graph, Buffers]] = weakref.WeakKeyDictionary()
        self._initial: dict[str, np.ndarray] | None = None

    # -- to be supplied by a version -------------------------------------------------------
    def state_spec(self) -> StateSpec:
        raise NotImplementedError

    def load_layers(self, ckpt: Any, progress: Progress | None) -> None:
        raise NotImplementedError

    def record_layer(self, g: Graph, i: int, state: State, buf: Buffers) -> None:
        raise NotImplementedError

    def alloc_layer_buffers(self, buf: Buffers) -> None:
        """Add version-specific activation buffers to ``buf``."""

    # -- block pieces every version uses -----------------------------------------------------
    def record_norm_shift(
        self, g: Graph, buf: Buffers, vec: Any, off: dict[str, int], ln: str, shift: Any, mu: str,
        out: Act, mixes: int, *, delta: Any = None, label: str = "",
    ) -> None:  # fmt: skip
        """``xn = ln(x)``; ``out[m] = xn + (prev - xn) * mu[m]``; save each slot's last ``xn`` row."""
        n = buf.tokens
        layer_norm(g, n, buf.x, buf.xn, vec, off[ln + ".weight"], off[ln + ".bias"], eps=LN_EPS, label=f"{label}.{ln}")
        token_mix(g, n, buf.cursors, buf.xn, shift, vec, off[mu], out, mixes=mixes, slots=buf.slots,
                  plane=buf.tmax * self.info.num_emb, delta=delta, label=f"{label}.mix")  # fmt: skip
        token_store(g, n, buf.cursors, buf.xn, shift, slots=buf.slots, label=f"{label}.shift")

    def record_gated_channel_mix(self, g: Graph, buf: Buffers, lw: Any, shift: Any, label: str) -> None:
        """RWKV-4..6 channel mix: ``x += sigmoid(Wr xr) * (Wv relu(Wk xk)^2)``.

        ``lw`` has ``vec``/``off`` (ln2, ``ffn.mu`` = [k, r] mixes) and ffn_key/ffn_value/ffn_receptance.
        """
        n, b = buf.tokens, buf
        plane = buf.tmax * self.info.num_emb
        fmix: Act = b.fmix  # type: ignore[attr-defined]
        self.record_norm_shift(g, buf, lw.vec, lw.off, "ln2", shift, "ffn.mu", fmix, 2, label=label)
        matmul(g, n, fmix, lw.ffn_key, b.fk, act="relu_sq", label=f"{label}.key")  # type: ignore[attr-defined]
        matmul(g, n, fmix.at(plane), lw.ffn_receptance, b.fr, act="sigmoid", label=f"{label}.receptance")  # type: ignore[attr-defined]
        matmul(g, n, b.fk, lw.ffn_value, b.fv, label=f"{label}.value")  # type: ignore[attr-defined]
        add_mul(g, n, b.fr, b.fv, buf.x, label=f"{label}.out")  # type: ignore[attr-defined]

    def alloc_gated_channel_mix(self, buf: Buffers) -> None:
        dev, c, t = self.device, self.info.num_emb, buf.tmax
        buf.fmix = act_buffer(dev, t, c, "ffn.mix", planes=2)  # type: ignore[attr-defined]
        buf.fk = act_buffer(dev, t, self.info.ffn_size, "ffn.key")  # type: ignore[attr-defined]
        buf.fr = act_buffer(dev, t, c, "ffn.receptance")  # type: ignore[attr-defined]
        buf.fv = act_buffer(dev, t, c, "ffn.value")  # type: ignore[attr-defined]

    # -- loading shared parts --------------------------------------------------------------
    def load_common(self, ckpt: Any, progress: Progress | None = None) -> None:
        """Embedding (kept on the host), ln0, ln_out and the head."""
        emb = ckpt.load("emb.weight", np.float32)
        half = emb.astype(np.float16)
        # bf16/f16 checkpoints convert to f16 exactly; keep f32 only when that would lose bits
        self.emb = half if np.array_equal(half.astype(np.float32), emb) else emb
        del emb, half
        pack = VectorPack()
        for name in ("blocks.0.ln0.weight", "blocks.0.ln0.bias", "ln_out.weight", "ln_out.bias"):
            pack.add(name, ckpt.load(name, np.float32))
        self.vec = pack.upload(self.device, "vec.global")
        self.voff = pack.off
        self.head = self.matrix(ckpt, "head.weight")

    def matrix(self, ckpt: Any, name: str, transpose: bool = False) -> Matrix:
        w = ckpt.load(name, np.float16)
        if w.ndim > 2:
            w = w.reshape(-1, w.shape[-1])
        return upload_matrix(self.device, w.T if transpose else w, name)

    def load_time_state(self, ckpt: Any, source: str = "") -> None:
        """Use ``blocks.{i}.att.time_state`` tensors (state tuning) as every new slot's start.

        Each is ``(H, N, N)`` indexed [value, key], the layout of our ``wkv`` state part.
        """
        spec = self.state_spec()
        if spec.get("wkv") != (self.info.num_head, self.info.head_size, self.info.head_size):
            raise StateError(f"{self.info.describe()} has no matrix state to tune ({source or 'state file'})")
        want = spec["wkv"]
        rows = []
        for i in range(self.info.num_layer):
            name = f"blocks.{i}.att.time_state"
            if name not in ckpt:
                raise StateError(f"{source or 'state file'} has no tensor {name} (a state-tuning file needs one per layer)")
            t = ckpt.load(name, np.float32)
            if tuple(t.shape) != want:
                raise StateError(f"{source or 'state file'}: {name} has shape {tuple(t.shape)}, this model needs {want}")
            rows.append(t)
        init = {k: v.copy() for k, v in self.initial_state().items()}
        init["wkv"] = np.stack(rows)
        self._initial = init

    def initial_state(self) -> dict[str, np.ndarray]:
        """``[L, *slot_shape]`` arrays a fresh slot starts from (zeros unless state-tuned)."""
        if self._initial is None:
            L = self.info.num_layer
            self._initial = {k: np.zeros((L, *s), np.float32) for k, s in self.state_spec().items()}
        return self._initial

    # -- public API --------------------------------------------------------------------------
    def new_state(self, batch_size: int = 1) -> State:
        """A state of ``batch_size`` slots, each at the model's initial state."""
        return State(self, batch_size, self.state_spec())

    def forward(self, tokens: Sequence[int], state: State, *, full: bool = False, slot: int = 0) -> np.ndarray:
        """Feed ``tokens`` to one slot of ``state`` (advancing it) and return logits.

        Returns ``(V,)`` for the last token, or ``(T, V)`` for every token with ``full=True``.
        """
        ids = self.check_tokens(tokens)
        self.check_state(state)
        if not 0 <= slot < state.batch_size:
            raise StateError(f"slot {slot} is outside the state's batch of {state.batch_size}")
        inputs: list[list[int]] = [[] for _ in range(state.batch_size)]
        outs = []
        for start in range(0, len(ids), self.token_chunk_size):
            inputs[slot] = ids[start : start + self.token_chunk_size]
            last = start + self.token_chunk_size >= len(ids)
            res = self._step(state, inputs, full=full, want=[slot] if (full or last) else [])
            if full or last:
                outs.append(res[slot])
        return np.concatenate(outs, axis=0) if full else outs[-1][-1]

    def forward_batch(self, inputs: Sequence[Sequence[int]], state: State, *, full: bool = False) -> list[np.ndarray | None]:
        """Run every slot's tokens to completion, packing slots into shared chunks.

        ``inputs[b]`` are slot b's tokens (may be empty: that slot is skipped and gets None).
        Returns per slot ``(V,)`` logits of its last token, or ``(T_b, V)`` with ``full=True``.
        """
        self.check_state(state)
        if len(inputs) != state.batch_size:
            raise StateError(f"{len(inputs)} inputs for a state of {state.batch_size} slots")
        queues = [self.check_tokens(t, allow_empty=True) for t in inputs]
        pos = [0] * len(queues)
        outs: list[list[np.ndarray]] = [[] for _ in queues]
        while any(p < len(q) for p, q in zip(pos, queues)):
            take = self._share(queues, pos)
            chunk = [q[p : p + n] for q, p, n in zip(queues, pos, take)]
            done = [b for b, (q, p, n) in enumerate(zip(queues, pos, take)) if n and p + n == len(q)]
            want = [b for b, n in enumerate(take) if n] if full else done
            res = self._step(state, chunk, full=full, want=want)
            for b in want:
                outs[b].append(res[b])
            pos = [p + n for p, n in zip(pos, take)]
        result: list[np.ndarray | None] = []
        for b, q in enumerate(queues):
            if not q:
                result.append(None)
            else:
                result.append(np.concatenate(outs[b], axis=0) if full else outs[b][-1][-1])
        return result

    # -- validation ----------------------------------------------------------------------------
    def check_tokens(self, tokens: Sequence[int], *, allow_empty: bool = False) -> list[int]:
        try:
            ids = [int(t) for t in tokens]
        except (TypeError, ValueError) as exc:
            raise TokenError(f"tokens must be integers: {exc}") from exc
        if not ids and not allow_empty:
            raise TokenError("empty token list: give at least one token")
        for i, t in enumerate(ids):
            if not 0 <= t < self.info.num_vocab:
                raise TokenError(f"token {t} at position {i} is outside the vocabulary [0, {self.info.num_vocab})")
        return ids

    def check_state(self, state: State) -> None:
        if not isinstance(state, State):
            raise StateError(f"expected a State from Model.new_state(), got {type(state).__name__}")
        if state.model is not self:
            state.check_model(self)
            raise StateError("this state was created by another loaded model; use Model.new_state()")

    # -- the step runner ----------------------------------------------------------------------
    def _share(self, queues: list[list[int]], pos: list[int]) -> list[int]:
        """Split this chunk's token budget fairly between slots with tokens left."""
        left = [len(q) - p for q, p in zip(queues, pos)]
        take = [0] * len(left)
        budget = self.token_chunk_size
        active = [b for b, n in enumerate(left) if n]
        while budget and active:
            share = max(1, budget // len(active))
            for b in list(active):
                n = min(share, left[b] - take[b], budget)
                take[b] += n
                budget -= n
                if take[b] == left[b]:
                    active.remove(b)
                if not budget:
                    break
        return take

    def _graph(self, state: State) -> tuple[Graph, Buffers]:
        found = self._graphs.get(state)
        if found is None:
            buf = Buffers(self, self.token_chunk_size, state.batch_size)
            self.alloc_layer_buffers(buf)
            found = (self._record(state, buf), buf)
            self._graphs[state] = found
        return found

    def _record(self, state: State, buf: Buffers) -> Graph:
        g = Graph(self.device)
        layer_norm(g, buf.tokens, buf.xin, buf.x, self.vec, self.voff["blocks.0.ln0.weight"], self.voff["blocks.0.ln0.bias"], label="ln0")
        for i in range(self.info.num_layer):
            self.record_layer(g, i, state, buf)

        def copy_rows(enc: Any) -> None:
            row_bytes = self.info.num_emb * 4
            dst = 0
            for first, rows in self._plan.out_rows:
                enc.copy_buffer_to_buffer(buf.x.buffer, first * row_bytes, buf.hx.buffer, dst * row_bytes, rows * row_bytes)
                dst += rows

        g.copy(copy_rows, "head.rows")
        layer_norm(g, buf.out, buf.hx, buf.hn, self.vec, self.voff["ln_out.weight"], self.voff["ln_out.bias"], label="ln_out")
        assert self.head is not None
        matmul(g, buf.out, buf.hn, self.head, buf.logits, label="head")

        def copy_logits(enc: Any) -> None:
            size = buf.out.value * self.info.num_vocab * 4
            if size:
                enc.copy_buffer_to_buffer(buf.logits.buffer, 0, buf.staging, 0, size)

        g.copy(copy_logits, "logits.readback")
        return g

    def _step(self, state: State, chunk: Sequence[Sequence[int]], *, full: bool, want: Sequence[int]) -> dict[int, np.ndarray]:
        """One submission: feed ``chunk[b]`` to slot b; return logits for slots in ``want``."""
        g, buf = self._graph(state)
        starts, lens, slot_of = [], [], []
        t = 0
        for b, toks in enumerate(chunk):
            starts.append(t)
            lens.append(len(toks))
            slot_of.extend([b] * len(toks))
            t += len(toks)
        tokens = np.fromiter((tok for toks in chunk for tok in toks), dtype=np.int64, count=t)
        cursors = np.concatenate([np.stack([starts, lens], 1).reshape(-1), slot_of]).astype(np.uint32)
        out_rows = []
        for b in want:
            if full:
                out_rows.append((starts[b], lens[b]))
            else:
                out_rows.append((starts[b] + lens[b] - 1, 1))
        self._plan = Step(tokens, cursors, out_rows)
        n_out = sum(r for _, r in out_rows)
        dev = self.device
        dev.write(buf.xin.buffer, self.emb[tokens].astype(np.float32, copy=False))
        dev.write(buf.cursors, cursors)
        buf.tokens.set(t)
        buf.out.set(n_out)
        enc = dev.device.create_command_encoder()
        g.encode(enc)
        dev.queue.submit([enc.finish()])
        result: dict[int, np.ndarray] = {}
        if n_out:
            import wgpu

            size = n_out * self.info.num_vocab * 4
            buf.staging.map_sync(wgpu.MapMode.READ, 0, size)
            try:
                logits = np.frombuffer(buf.staging.read_mapped(0, size), np.float32).reshape(n_out, -1).copy()
            finally:
                buf.staging.unmap()
            row = 0
            for b, (_, rows) in zip(want, out_rows):
                result[b] = logits[row : row + rows]
                row += rows
        return result
