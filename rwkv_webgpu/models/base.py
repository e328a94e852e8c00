"""What every RWKV version shares: embed -> blocks -> head, the step runner, validation.

A version module subclasses :class:`Model` and supplies only its weights (``load_layers``),
its state layout (``state_spec``) and how one block is recorded (``record_layer``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..config import ModelInfo
from ..errors import ConfigError, RWKVError, StateError, TokenError
from ..gpu import (
    Act,
    Device,
    Graph,
    Matrix,
    QMatrix,
    Weight,
    act_buffer,
    upload_matrices,
    upload_qmatrices,
)
from ..hooks import Frame, HookRegistry
from ..ops import Product, layer_norm, matmul, matmul_group, norm_mix, token_mix
from ..ops.embed import EmbeddingTable, upload_table
from ..state import State, StateSpec
from ..weights.quant import Quant, QuantPlan, quant_for, quantize
from .chain import DecodeChain
from .step import (
    Buffers,
    Plan,
    StepRunner,
    VectorPack,
    check_slot_count,
    gpu_sampling_settings,
    sampling_row,
    share_budget,
)

FULL_ROWS = 512  # logits rows one step can return (the logits buffer and its staging copy)

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
LN_EPS = 1e-5


class Model:
    """A loaded RWKV model on one WebGPU device. Use :func:`rwkv_webgpu.load_model` to create one."""

    def __init__(self, info: ModelInfo, device: Device, *, token_chunk_size: int = 128):
        if token_chunk_size < 1:
            raise ConfigError(f"token_chunk_size must be >= 1, got {token_chunk_size}")
        self.info = info
        self.device = device
        self.token_chunk_size = token_chunk_size
        self.path = ""  # the checkpoint it was loaded from (set by load_model)
        self.quant = QuantPlan()
        self.quant_layers: set[int] = set()
        self.tokenizer: Any = None
        self.emb: np.ndarray = np.zeros((0, 0), np.float32)
        self.head: Weight | None = None
        self.vec: Any = None  # global vectors: ln0, ln_out
        self.voff: dict[str, int] = {}
        self.runner = StepRunner(self)
        self.hooks = HookRegistry(on_change=self.runner.forget_graphs)
        self._initial: dict[str, np.ndarray] | None = None
        self._emb_table: EmbeddingTable | None = None

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
    def hook_point(self, g: Graph, buf: Buffers, state: State, point: str, x: Act, *,
                   layer: int | None = None, counter: Any = None) -> None:  # fmt: skip
        """Let the hooks registered for ``point`` record their work here (nothing if none)."""
        fns = self.hooks.active(point)
        if not fns:
            return
        weights = self.layers[layer] if layer is not None else None  # type: ignore[attr-defined]
        frame = Frame(point, layer, x, self, state, weights, g, counter or buf.tokens, self.hooks)
        for fn in fns:
            fn(frame)

    def record_norm_shift(
        self, g: Graph, buf: Buffers, state: State, vec: Any, off: dict[str, int], ln: str, shift: Any, mu: str,
        out: Act, mixes: int, *, delta: Any = None, store: bool = True, label: str = "",
    ) -> None:  # fmt: skip
        """``xn = ln(x)``; ``out[m] = xn + (prev - xn) * mu[m]``; save each slot's last ``xn`` row
        (unless ``store`` is off: a later mix of the same rows saves it).

        ``label`` is "{layer}.att" or "{layer}.ffn"; the hook points around it are recorded here.
        """
        n = buf.tokens
        layer = int(label.split(".")[0])
        if ln == "ln2":
            self.hook_point(g, buf, state, f"{layer}.att.out", buf.x, layer=layer)
        # decoding steps (one token per slot) run the norm and the mix as one kernel; a hook on
        # the normed row needs them apart
        fused = not self.hooks.active(f"{label}.norm")
        if fused:
            with g.only_when(lambda: buf.one_per_slot):
                norm_mix(g, n, buf.cursors, buf.x, buf.xn, shift, vec, off[ln + ".weight"], off[ln + ".bias"], off[mu], out,
                         mixes=mixes, slots=buf.slots, plane=buf.tmax * self.info.num_emb, eps=LN_EPS, delta=delta,
                         store=store, label=f"{label}.{ln}_mix")  # fmt: skip
        with g.only_when(lambda: not (fused and buf.one_per_slot)):
            layer_norm(g, n, buf.x, buf.xn, vec, off[ln + ".weight"], off[ln + ".bias"], eps=LN_EPS, label=f"{label}.{ln}")
            self.hook_point(g, buf, state, f"{label}.norm", buf.xn, layer=layer)
            token_mix(g, n, buf.cursors, buf.xn, shift, vec, off[mu], out, mixes=mixes, slots=buf.slots,
                      plane=buf.tmax * self.info.num_emb, delta=delta, store=store, label=f"{label}.mix")  # fmt: skip

    def record_gated_channel_mix(self, g: Graph, buf: Buffers, state: State, lw: Any, shift: Any, label: str) -> None:
        """RWKV-4..6 channel mix: ``x += sigmoid(Wr xr) * (Wv relu(Wk xk)^2)``.

        ``lw`` has ``vec``/``off`` (ln2, ``ffn.mu`` = [k, r] mixes) and ffn_key/ffn_value/ffn_receptance.
        """
        n, b = buf.tokens, buf
        plane = buf.tmax * self.info.num_emb
        fmix: Act = b.fmix  # type: ignore[attr-defined]
        self.record_norm_shift(g, buf, state, lw.vec, lw.off, "ln2", shift, "ffn.mu", fmix, 2, label=label)
        bb: Any = b
        matmul_group(g, n, [Product(fmix, lw.ffn_key, bb.fk, "relu_sq", label=f"{label}.key"),
                            Product(fmix.at(plane), lw.ffn_receptance, bb.fr, "sigmoid", label=f"{label}.receptance")],
                     label=f"{label}.key_receptance")  # fmt: skip
        # x += r * (Wv k): the product adds itself, times the gate r, into x (one dispatch)
        matmul(g, n, b.fk, lw.ffn_value, buf.x, gate=bb.fr, label=f"{label}.value")

    def alloc_gated_channel_mix(self, buf: Buffers) -> None:
        dev, c, t = self.device, self.info.num_emb, buf.tmax
        buf.fmix = act_buffer(dev, t, c, "ffn.mix", planes=2)  # type: ignore[attr-defined]
        buf.fk = act_buffer(dev, t, self.info.ffn_size, "ffn.key")  # type: ignore[attr-defined]
        buf.fr = buf.x.at(t * c)  # type: ignore[attr-defined]  # x's second plane: the gate of ffn.value

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

    def matrix(self, ckpt: Any, name: str, transpose: bool = False) -> Matrix | QMatrix:
        """Upload a weight matrix as f16, or quantized when ``quant`` selects it (or when a prefab
        file holds it quantized already)."""
        return self.matrices(ckpt, [(name, transpose)])[0]

    def matrices(self, ckpt: Any, names: list[tuple[str, bool]]) -> list[Matrix | QMatrix]:
        """:meth:`matrix` for several ``(name, transpose)``; the f16 ones share one buffer so
        products that read the same input can run as one dispatch (ops.matmul_group)."""
        out: list[Matrix | QMatrix | None] = [None] * len(names)
        plain: list[tuple[int, np.ndarray, str]] = []
        packed: list[tuple[int, Any, str]] = []
        for i, (name, transpose) in enumerate(names):
            ready = ckpt.quantized(name) if hasattr(ckpt, "quantized") else None
            if ready is not None:
                packed.append((i, ready, name))
            elif (kind := self.quant_kind(name)) is not Quant.NONE:
                w = ckpt.load(name, np.float32)
                packed.append((i, quantize(w.T if transpose else w, kind), name))
            else:
                w = ckpt.load(name, np.float16)
                w = w.reshape(-1, w.shape[-1]) if w.ndim > 2 else w
                plain.append((i, w.T if transpose else w, name))
        for (i, _, _), m in zip(plain, upload_matrices(self.device, [w for _, w, _ in plain], [n for *_, n in plain])):
            out[i] = m
        # quantized matrices of one kind share buffers too (ops.matmul_group on quantized weights)
        for kind in dict.fromkeys(qm.quant for _, qm, _ in packed):
            same = [p for p in packed if p[1].quant is kind]
            for (i, _, _), q in zip(same, upload_qmatrices(self.device, [qm for _, qm, _ in same], [n for *_, n in same])):
                out[i] = q
        return out  # type: ignore[return-value]

    def set_quantization(self, quant: QuantPlan, layers: Iterable[int] | None) -> None:
        """Quantize the large attention/FFN matrices of ``layers`` (all when None) at load."""
        self.quant = quant
        self.quant_layers = set(range(self.info.num_layer)) if layers is None else set(layers)

    def quant_kind(self, name: str) -> Quant:
        """The kind the tensor ``name`` is quantized to at load (:data:`Quant.NONE`: kept f16)."""
        return quant_for(name, self.quant, self.quant_layers)

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

    def save(self, path: str | os.PathLike[str], progress: Progress | None = None) -> None:
        """Save the model as loaded (LoRAs merged, matrices quantized) to one prefab file that
        :func:`rwkv_webgpu.load_model` reads back faster, with identical logits."""
        from ..loader import open_model_file
        from ..weights.prefab import save_prefab

        source = getattr(self, "path", None)
        if source is None:
            raise RWKVError("this model was not loaded from a file, so it cannot be saved")
        with open_model_file(source, getattr(self, "lora", ())) as ckpt:
            save_prefab(ckpt, path, quant=self.quant, quant_layers=self.quant_layers,
                        num_layer=self.info.num_layer, progress=progress)  # fmt: skip

    def load_state(self, path: str | os.PathLike[str]) -> State:
        """A state saved by :meth:`State.save` (refused if saved from another model shape or version)."""
        return State.load(self, path)

    def forward(self, tokens: Sequence[int], state: State, *, full: bool = False, slot: int = 0) -> np.ndarray:
        """Feed ``tokens`` to one slot of ``state`` (advancing it) and return logits.

        Returns ``(V,)`` for the last token, or ``(T, V)`` for every token with ``full=True``.
        """
        ids = self.check_tokens(tokens)
        self.check_state(state)
        if not 0 <= slot < state.batch_size:
            raise StateError(f"slot {slot} is outside the state's batch of {state.batch_size}")
        outs = []
        size = min(self.token_chunk_size, self.full_rows()) if full else self.token_chunk_size
        for start in range(0, len(ids), size):
            chunk: list[list[int]] = [[] for _ in range(state.batch_size)]
            chunk[slot] = ids[start : start + size]
            last = start + size >= len(ids)
            res = self.runner.run(state, Plan.pack(chunk, [slot] if (full or last) else [], full))
            if full or last:
                outs.append(res[slot])
        return np.concatenate(outs, axis=0) if full else outs[-1][-1]

    def embed(self, tokens: Sequence[int], state: State | None = None) -> np.ndarray:
        """The final normalised hidden state (``ln_out`` of the last token), shape ``(C,)``.

        A fixed-size summary of the whole sequence that RWKV's recurrence carries, used for
        embeddings. ``state`` (default: a fresh one) is advanced.
        """
        ids = self.check_tokens(tokens)
        st = state if state is not None else self.new_state()
        self.check_state(st)
        if len(ids) > 1:
            self.forward(ids[:-1], st)
        chunk: list[list[int]] = [[] for _ in range(st.batch_size)]
        chunk[0] = ids[-1:]
        return self.runner.run(st, Plan.pack(chunk, [0], False, hidden=True))[0][-1]

    def forward_sample(self, tokens: Sequence[int], state: State, sampling: Any, rng: np.random.Generator,
                       *, slot: int = 0, allowed: np.ndarray | None = None) -> int:  # fmt: skip
        """Feed ``tokens`` and choose the next token on the GPU: only its id is read back.

        Applies temperature, top_p and top_k as :class:`rwkv_webgpu.Sampler` does, with one
        ``rng.random()`` draw; ``allowed`` is a boolean ``(V,)`` mask of ids that may be chosen.
        Other sampler settings raise :class:`ConfigError`: use a Sampler on the logits of
        :meth:`forward` for those. The rule is in shaders/sample.wgsl.
        """
        ids = self.check_tokens(tokens)
        self.check_state(state)
        if not 0 <= slot < state.batch_size:
            raise StateError(f"slot {slot} is outside the state's batch of {state.batch_size}")
        inputs: list[Sequence[int]] = [[] for _ in range(state.batch_size)]
        inputs[slot] = ids
        chosen = self.forward_sample_batch(inputs, state, sampling, rng, allowed=allowed)[slot]
        assert chosen is not None
        return chosen

    def decode_chain(self, state: State, sampling: Any, rng: Any, *, slots: Sequence[int] = (0,),
                     allowed: np.ndarray | None = None, depth: int | None = None) -> DecodeChain:  # fmt: skip
        """Decoding with GPU sampling kept ``depth`` steps ahead of the host (default
        ``chain.DEPTH``; see :class:`DecodeChain`): what :func:`rwkv_webgpu.generate` runs on
        GPUs. Same tokens, state and random draws as a loop of :meth:`forward_sample_batch` over
        ``slots``."""
        return DecodeChain(self, state, sampling, rng, slots=slots, allowed=allowed, depth=depth)

    def embedding_table(self) -> EmbeddingTable:
        """The embedding on the GPU (uploaded on first use, for steps whose token the GPU chose:
        2 bytes per value, or 4 where the checkpoint's values do not fit f16)."""
        if self._emb_table is None:
            self._emb_table = upload_table(self.device, self.emb, "emb")
        return self._emb_table

    def forward_sample_batch(self, inputs: Sequence[Sequence[int]], state: State, sampling: Any | Sequence[Any],
                             rng: np.random.Generator | Sequence[np.random.Generator], *,
                             allowed: np.ndarray | None = None) -> list[int | None]:  # fmt: skip
        """:meth:`forward_sample` for every slot at once: feed each slot its tokens, then choose
        the next token of every fed slot in one GPU step, reading back only the ids.

        ``inputs[b]`` may be empty (slot b is left alone and gets None). ``sampling`` is one
        config for every slot or one per slot; ``rng`` one generator (one draw per fed slot, in
        slot order) or one per slot; ``allowed`` one mask for every slot.
        """
        self.check_state(state)
        n = state.batch_size
        if len(inputs) != n:
            raise StateError(f"{len(inputs)} inputs for a state of {n} slots")
        configs, rngs = gpu_sampling_settings(self, sampling, rng, n, allowed)
        queues = [self.check_tokens(t, allow_empty=True) for t in inputs]
        want = [b for b, q in enumerate(queues) if q]
        check_slot_count(self, len(want))
        if not want:
            return [None] * n
        if any(len(q) > 1 for q in queues):
            self.forward_batch([q[:-1] for q in queues], state)
        plan = Plan.pack([q[-1:] for q in queues], want, False)
        plan.sample = np.array([sampling_row(configs[b], rngs[b]) for b in want], np.float32)
        plan.allowed = allowed
        res = self.runner.run(state, plan)
        return [int(res[b][0]) if b in res else None for b in range(n)]

    def run(
        self, inputs: list[list[int]], state: State, *, token_chunk_size: int | None = None, output: str = "last"
    ) -> list[np.ndarray | None]:
        """One GPU step over the slots of ``state``, web-rwkv style.

        ``inputs[b]`` is slot b's queue of tokens; at most ``token_chunk_size`` tokens in total are
        consumed (shared fairly between slots) and removed from the front of the lists, so call
        again until every list is empty. Returns per slot: with ``output="last"``, the ``(V,)``
        logits of a slot whose queue emptied in this call, else None; with ``output="full"``,
        ``(n, V)`` logits of the n tokens the slot consumed in this call (None if none).
        """
        self.check_state(state)
        if len(inputs) != state.batch_size:
            raise StateError(f"{len(inputs)} inputs for a state of {state.batch_size} slots")
        if output not in ("last", "full"):
            raise ValueError(f'output must be "last" or "full", not {output!r}')
        budget = self.token_chunk_size if token_chunk_size is None else token_chunk_size
        if not 1 <= budget <= self.token_chunk_size:
            raise ConfigError(
                f"token_chunk_size must be in [1, {self.token_chunk_size}] (the buffers of this model; "
                "load it with a larger token_chunk_size for more)"
            )
        for q in inputs:
            self.check_tokens(q, allow_empty=True)
        full = output == "full"
        if full:
            budget = min(budget, self.full_rows())
        take = share_budget([len(q) for q in inputs], budget)
        chunk = [q[:n] for q, n in zip(inputs, take)]
        want = [b for b, (q, n) in enumerate(zip(inputs, take)) if n and (full or n == len(q))]
        res = self.runner.run(state, Plan.pack(chunk, want, full)) if any(take) else {}
        for q, n in zip(inputs, take):
            del q[:n]
        return [None if b not in res else (res[b] if full else res[b][-1]) for b in range(len(inputs))]

    def full_rows(self) -> int:
        """The most tokens whose logits one step returns (``full`` outputs): FULL_ROWS, or fewer
        where one buffer binding of the adapter holds fewer rows of logits. Prompts read back only
        their last logits, so their chunks may be longer (``token_chunk_size``)."""
        return max(1, min(FULL_ROWS, self.device.info.max_binding_size // (4 * self.info.num_vocab)))

    def forward_batch(self, inputs: Sequence[Sequence[int]], state: State, *, full: bool = False) -> list[np.ndarray | None]:
        """Run every slot's tokens to completion, packing slots into shared chunks.

        ``inputs[b]`` are slot b's tokens (may be empty: that slot is skipped and gets None).
        Returns per slot ``(V,)`` logits of its last token, or ``(T_b, V)`` with ``full=True``.
        """
        self.check_state(state)
        if len(inputs) != state.batch_size:
            raise StateError(f"{len(inputs)} inputs for a state of {state.batch_size} slots")
        queues = [self.check_tokens(t, allow_empty=True) for t in inputs]
        outs: list[list[np.ndarray]] = [[] for _ in queues]
        while any(queues):
            for b, res in enumerate(self.run(queues, state, output="full" if full else "last")):
                if res is not None:
                    outs[b].append(res if full else res[None])
        return [(np.concatenate(o, axis=0) if full else o[-1][-1]) if o else None for o in outs]

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

