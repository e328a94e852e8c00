"""Turning token lists into GPU submissions: activation buffers, the recorded graph per state,
packing slots into one step, and reading logits back."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..gpu import Counter, Device, Graph, act_buffer
from ..ops import layer_norm, matmul
from ..ops.embed import EmbeddingTable, embed_rows
from ..ops.sample import mask_bits, sample_rows

if TYPE_CHECKING:
    from ..state import State
    from .base import Model


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


WIDEN_FROM = 16  # prompt steps of at least this many tokens widen their f16 embedding rows on the GPU


class Buffers:
    """Activations shared by every layer of one graph (sized for ``tmax`` tokens)."""

    def __init__(self, model: Model, tmax: int, slots: int):
        dev, c = model.device, model.info.num_emb
        self.tmax, self.slots = tmax, slots
        self.head_rows = max(slots, min(tmax, model.full_rows()))
        self.tokens = Counter(dev, "count.tokens")
        self.one_per_slot = False  # this step has at most one token per slot (set per step)
        self.out = Counter(dev, "count.out")
        self.cursors = dev.storage((2 * slots + tmax) * 4, "cursors")
        self.xin = act_buffer(dev, tmax, c, "x.embed")
        self.x = act_buffer(dev, tmax, c, "x", planes=2)  # the second plane: a gate (RWKV-4..6 FFN)
        self.xn = act_buffer(dev, tmax, c, "x.norm")
        self.hx = act_buffer(dev, self.head_rows, c, "head.x")
        self.hn = act_buffer(dev, self.head_rows, c, "head.norm")
        self.logits = act_buffer(dev, self.head_rows, model.info.num_vocab, "logits")
        self.staging = dev.staging(self.head_rows * max(model.info.num_vocab, c) * 4, "logits.staging")
        self.sampled = Counter(dev, "count.sampled")
        self.sample_params = dev.storage(self.head_rows * 16, "sample.params")
        self.ids = dev.storage(self.head_rows * 4, "sample.ids")
        self.allowed = dev.upload(mask_bits(None, model.info.num_vocab), "sample.allowed")
        self.allowed_now: bytes | None = None  # the mask last written (None: every id) ...
        self.allowed_src: np.ndarray | None = None  # ... and the array it came from
        self.id_rings: list[Any] | None = None  # chained decoding's id staging (StepRunner.id_rings)
        self.rows16: EmbeddingTable | None = None  # a prompt's f16 embedding rows (StepRunner.widen_graph)


@dataclass
class Plan:
    """One submission: tokens of several slots packed in slot order."""

    tokens: np.ndarray  # [T] token ids
    cursors: np.ndarray  # u32 [2B + T]: (start, len) per slot, then the slot of each token
    out_rows: list[tuple[int, int]] = field(default_factory=list)  # (first row of x, rows) sent to the head
    want: list[int] = field(default_factory=list)  # slots whose logits come back, in out_rows order
    hidden: bool = False  # read back the normalised final hidden state (ln_out) instead of logits
    sample: np.ndarray | None = None  # f32 [rows, 4] (temperature, top_p, top_k, u): read back token ids
    allowed: np.ndarray | None = None  # bool [V]: the ids sampling may choose (None: all)
    chained: bool = False  # the tokens are the ids the previous step sampled (gathered on the GPU)
    ring: int | None = None  # read the ids through this one of the staging rings (chained decoding)
    backup: State | None = None  # copy the state here before the step (a checkpoint of models/chain.py)
    submitted: int | None = None  # the submission's index (Device.submit), once submitted

    @staticmethod
    def pack(chunk: Sequence[Sequence[int]], want: Sequence[int], full: bool, hidden: bool = False) -> Plan:
        starts, lens, slot_of = [], [], []
        t = 0
        for b, toks in enumerate(chunk):
            starts.append(t)
            lens.append(len(toks))
            slot_of.extend([b] * len(toks))
            t += len(toks)
        tokens = np.fromiter((tok for toks in chunk for tok in toks), dtype=np.int64, count=t)
        cursors = np.concatenate([np.stack([starts, lens], 1).reshape(-1), slot_of]).astype(np.uint32)
        rows = [(starts[b], lens[b]) if full else (starts[b] + lens[b] - 1, 1) for b in want]
        return Plan(tokens, cursors, rows, list(want), hidden)

    @property
    def shape(self) -> tuple[Any, ...]:
        """What the recorded command buffer depends on: per-slot token counts and output rows."""
        return (self.cursors[: len(self.cursors) - len(self.tokens)].tobytes(), tuple(self.out_rows), self.hidden,
                self.sample is not None)  # fmt: skip

    @property
    def one_per_slot(self) -> bool:
        """Every slot has at most one token (a decoding step)."""
        slots = (len(self.cursors) - len(self.tokens)) // 2
        return bool(slots == 0 or self.cursors[1 : 2 * slots : 2].max() <= 1)

    @property
    def num_out(self) -> int:
        return sum(r for _, r in self.out_rows)


def sampling_row(cfg: Any, rng: Any) -> list[float]:
    """One row of ``Plan.sample`` for a slot sampled with ``cfg`` (a SamplingConfig):
    temperature, top_p, top_k and one draw of ``rng`` (as the host sampler draws per token)."""
    return [cfg.temperature, cfg.top_p, cfg.top_k, rng.random()]


def gpu_sampling_settings(model: Model, sampling: Any, rng: Any, n: int,
                          allowed: np.ndarray | None) -> tuple[list[Any], list[Any]]:  # fmt: skip
    """The sampling config and generator of each of ``n`` slots (one of each for all, or one
    per slot). Refuses (ConfigError) the wrong counts, settings the GPU kernel does not apply,
    an ``allowed`` mask of the wrong shape, and more slots than one step takes."""
    from ..errors import ConfigError
    from ..sampling import gpu_unsupported

    configs = list(sampling) if isinstance(sampling, (list, tuple)) else [sampling] * n
    rngs = list(rng) if isinstance(rng, (list, tuple)) else [rng] * n
    if len(configs) != n or len(rngs) != n:
        raise ConfigError(f"{len(configs)} sampling configs and {len(rngs)} generators for {n} slots "
                          "(give one of each, or one per slot)")  # fmt: skip
    for cfg in {id(c): c for c in configs}.values():  # one check per distinct config
        unsupported = gpu_unsupported(cfg)
        if unsupported:
            raise ConfigError(f"GPU sampling supports temperature, top_p and top_k only, not {unsupported}")
    if allowed is not None and np.shape(allowed) != (model.info.num_vocab,):
        raise ConfigError(f"allowed has shape {np.shape(allowed)}; this model needs ({model.info.num_vocab},)")
    return configs, rngs


def check_slot_count(model: Model, slots: int) -> None:
    """Refuse (ConfigError) sampling more slots at once than one step of ``model`` takes."""
    from ..errors import ConfigError

    if slots > model.token_chunk_size:
        raise ConfigError(f"{slots} slots to sample at once; this model's steps take at most "
                          f"{model.token_chunk_size} tokens (load it with a larger token_chunk_size)")  # fmt: skip


def share_budget(left: Sequence[int], budget: int) -> list[int]:
    """Split ``budget`` tokens fairly between slots with ``left[b]`` tokens waiting."""
    take = [0] * len(left)
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


class StepRunner:
    """Records one graph per state (cached) and runs packed steps through it."""

    def __init__(self, model: Model):
        self.model = model
        self._graphs: weakref.WeakKeyDictionary[State, tuple[Graph, Buffers]] = weakref.WeakKeyDictionary()
        self._ahead: weakref.WeakKeyDictionary[State, tuple[Any, Any]] = weakref.WeakKeyDictionary()
        self._embeds: weakref.WeakKeyDictionary[State, Graph] = weakref.WeakKeyDictionary()
        # Encode the next step while the GPU runs this one. On a CPU adapter (lavapipe) the
        # "GPU" shares the cores with Python, so the overlap would only slow it down.
        self.encode_ahead = not model.device.info.cpu
        # Prompt steps of at least this many tokens send their embedding rows as f16 and widen
        # them on the GPU (half the bytes to write, and numpy's f16 -> f32 conversion of a
        # 1024 x 2048 chunk takes milliseconds while the GPU waits); None: the host widens.
        # Only where the table is f16 and a CPU adapter is not the one that would do the work.
        self.widen_from: int | None = None if model.device.info.cpu else WIDEN_FROM
        self._widens: weakref.WeakKeyDictionary[State, Graph] = weakref.WeakKeyDictionary()
        # Diagnostics (benchmarks/profile_step.py): called with each step's command encoder
        # first (True) and last (False), e.g. to bracket the step with GPU timestamps.
        self.stamp: Callable[[Any, bool], None] | None = None

    def forget_graphs(self) -> None:
        """Drop every recorded graph (hooks changed); the next step records afresh."""
        self._graphs = weakref.WeakKeyDictionary()
        self._ahead = weakref.WeakKeyDictionary()
        self._embeds = weakref.WeakKeyDictionary()
        self._widens = weakref.WeakKeyDictionary()

    def graph(self, state: State) -> tuple[Graph, Buffers]:
        found = self._graphs.get(state)
        if found is None:
            buf = Buffers(self.model, self.model.token_chunk_size, state.batch_size)
            self.model.alloc_layer_buffers(buf)
            found = (self._record(state, buf), buf)
            self._graphs[state] = found
        return found

    def _record(self, state: State, buf: Buffers) -> Graph:
        m = self.model
        g = Graph(m.device)
        layer_norm(g, buf.tokens, buf.xin, buf.x, m.vec, m.voff["blocks.0.ln0.weight"], m.voff["blocks.0.ln0.bias"], label="ln0")
        m.hook_point(g, buf, state, "embed", buf.x)
        for i in range(m.info.num_layer):
            m.hook_point(g, buf, state, f"{i}.in", buf.x, layer=i)
            m.record_layer(g, i, state, buf)
            m.hook_point(g, buf, state, f"{i}.out", buf.x, layer=i)
        row_bytes = m.info.num_emb * 4

        def copy_rows(enc: Any, plan: Plan) -> None:
            dst = 0
            for first, rows in plan.out_rows:
                enc.copy_buffer_to_buffer(buf.x.buffer, first * row_bytes, buf.hx.buffer, dst * row_bytes, rows * row_bytes)
                dst += rows

        g.copy(copy_rows, "head.rows")
        m.hook_point(g, buf, state, "head.in", buf.hx, counter=buf.out)
        layer_norm(g, buf.out, buf.hx, buf.hn, m.vec, m.voff["ln_out.weight"], m.voff["ln_out.bias"], label="ln_out")
        assert m.head is not None
        matmul(g, buf.out, buf.hn, m.head, buf.logits, label="head")
        m.hook_point(g, buf, state, "logits", buf.logits, counter=buf.out)

        sample_rows(g, buf.sampled, buf.logits, buf.sample_params, buf.ids, buf.allowed, label="sample")

        def copy_logits(enc: Any, plan: Plan) -> None:
            if plan.sample is not None:
                staging = buf.staging if plan.ring is None else self.id_rings(buf)[plan.ring]
                enc.copy_buffer_to_buffer(buf.ids, 0, staging, 0, max(4, plan.num_out * 4))
                return
            src, width = (buf.hn.buffer, m.info.num_emb) if plan.hidden else (buf.logits.buffer, m.info.num_vocab)
            size = plan.num_out * width * 4
            if size:
                enc.copy_buffer_to_buffer(src, 0, buf.staging, 0, size)

        g.copy(copy_logits, "logits.readback")
        return g

    def run(self, state: State, plan: Plan) -> dict[int, np.ndarray]:
        """Encode, submit and read back one step: ``{slot: logits [rows, V]}`` for ``plan.want``.

        With ``encode_ahead``, a command buffer of the same shape is recorded while the GPU runs
        this step; the next step uses it when its shape matches (steady decoding always does).
        """
        key = plan.shape
        ahead = self._ahead.pop(state, None)
        cmd = ahead[1] if ahead is not None and ahead[0] == key else self.encode(state, plan)
        self.submit(state, plan, cmd)
        if self.encode_ahead:
            self._ahead[state] = (key, self.encode(state, plan))
        out = self.collect(state, plan)
        g, _ = self.graph(state)
        if g.captures:
            self.model.hooks.collect(self.model, g.captures)
        return out

    def encode(self, state: State, plan: Plan) -> Any:
        """Record the step's command buffer. It depends only on the plan's shape (token counts per
        slot and wanted rows), not on token values, so it can be built while the GPU is busy."""
        g, buf = self.graph(state)
        buf.tokens.value = len(plan.tokens)
        buf.one_per_slot = plan.one_per_slot
        buf.out.value = plan.num_out
        buf.sampled.value = plan.num_out if plan.sample is not None else 0
        enc = self.model.device.device.create_command_encoder()
        if self.stamp is not None:
            self.stamp(enc, True)
        if plan.backup is not None:
            state.encode_copy(enc, plan.backup)
        if plan.chained:
            self.embed_graph(state).encode(enc)
        elif self.widens(state, plan):
            self.widen_graph(state).encode(enc)
        g.encode(enc, plan, key=plan.shape)  # the counters above follow from the plan's shape
        if self.stamp is not None:
            self.stamp(enc, False)
        return enc.finish()

    def embed_graph(self, state: State) -> Graph:
        """The dispatch that gathers a chained step's input rows from the ids its predecessor
        sampled (the embedding table goes to the GPU the first time: Model.embedding_table)."""
        found = self._embeds.get(state)
        if found is None:
            _, buf = self.graph(state)
            found = Graph(self.model.device)
            embed_rows(found, buf.tokens, buf.ids, self.model.embedding_table(), buf.xin, label="embed.chained")
            self._embeds[state] = found
        return found

    def widens(self, state: State, plan: Plan) -> bool:
        """Whether this step's embedding rows go to the GPU as f16 and are widened there (a
        prompt step of at least ``widen_from`` tokens, an f16 table, and room in one binding)."""
        if plan.chained or self.widen_from is None or len(plan.tokens) < self.widen_from:
            return False
        if self.model.emb.dtype != np.float16:
            return False
        _, buf = self.graph(state)
        words = (self.model.info.num_emb + 1) // 2
        return buf.tmax * words * 4 <= self.model.device.info.max_binding_size

    def widen_graph(self, state: State) -> Graph:
        """The dispatch that widens a prompt's f16 embedding rows (written by :meth:`submit`
        into ``Buffers.rows16``, row t for token t) into ``x.embed``: the gather kernel of the
        chained steps, reading the rows as a table through ids 0, 1, 2, ..."""
        found = self._widens.get(state)
        if found is None:
            _, buf = self.graph(state)
            dev, c = self.model.device, self.model.info.num_emb
            words = (c + 1) // 2
            rows = dev.storage(buf.tmax * words * 4, "embed.rows16")
            buf.rows16 = EmbeddingTable((rows,), buf.tmax, c, buf.tmax, words, True)
            order = dev.upload(np.arange(buf.tmax, dtype=np.uint32), "embed.order")
            found = Graph(dev)
            embed_rows(found, buf.tokens, order, buf.rows16, buf.xin, label="embed.widen")
            self._widens[state] = found
        return found

    def id_rings(self, buf: Buffers) -> list[Any]:
        """Staging buffers for sampled ids, one per step a decode chain keeps in flight (its
        ``depth`` + 1, at most MAX_DEPTH + 1), so that one step's ids can be read while the steps
        after it (which copy their own ids to the others) are already submitted."""
        if buf.id_rings is None:
            from .chain import MAX_DEPTH

            dev = self.model.device
            buf.id_rings = [dev.staging(buf.head_rows * 4, f"sample.ids.ring{i}") for i in range(MAX_DEPTH + 1)]
        return buf.id_rings

    def profile(self, state: State, plan: Plan) -> list[tuple[str, float]]:
        """Run one step with a GPU timestamp around every dispatch: ``[(label, microseconds)]``."""
        from ..gpu.recorder import Profiler

        g, buf = self.graph(state)
        prof = Profiler(self.model.device)
        buf.tokens.value = len(plan.tokens)
        buf.one_per_slot = plan.one_per_slot
        buf.out.value = plan.num_out
        enc = self.model.device.device.create_command_encoder()
        if self.widens(state, plan):
            self.widen_graph(state).encode(enc, profiler=prof)
        g.encode(enc, plan, profiler=prof)
        prof.finish(enc)
        self.submit(state, plan, enc.finish())
        self.collect(state, plan)
        return prof.read()

    def submit(self, state: State, plan: Plan, cmd: Any) -> None:
        """Write the step's inputs and submit ``cmd`` (from :meth:`encode` with a plan of this shape)."""
        _, buf = self.graph(state)
        dev = self.model.device
        if self.widens(state, plan):
            self.widen_graph(state)  # (made by encode already; here for a caller that did not)
            assert buf.rows16 is not None
            rows = np.take(self.model.emb, plan.tokens, axis=0)
            if rows.shape[1] % 2:  # an odd width: a zero half ends each row, as the table's words
                rows = np.concatenate([rows, np.zeros((len(rows), 1), np.float16)], axis=1)
            dev.write(buf.rows16.parts[0], rows.view(np.uint32))
        elif not plan.chained:
            dev.write(buf.xin.buffer, self.model.emb[plan.tokens].astype(np.float32, copy=False))
        dev.write(buf.cursors, plan.cursors)
        buf.tokens.set(len(plan.tokens))
        buf.out.set(plan.num_out)
        if plan.sample is not None:
            dev.write(buf.sample_params, np.ascontiguousarray(plan.sample, np.float32))
            self._write_mask(buf, plan.allowed)
        buf.sampled.set(plan.num_out if plan.sample is not None else 0)
        plan.submitted = dev.submit([cmd])

    def _write_mask(self, buf: Buffers, allowed: np.ndarray | None) -> None:
        """Give the sampling kernel ``allowed`` (None: every id), unless it has it already. A
        read-only mask (the tokenizer's, see sampling.valid_ids) is recognised by identity."""
        if allowed is None and buf.allowed_now is None:  # every id, as already written
            return
        if allowed is not None and allowed is buf.allowed_src and not allowed.flags.writeable:
            return
        words = mask_bits(allowed, self.model.info.num_vocab)
        key = None if allowed is None else words.tobytes()
        if key != buf.allowed_now:
            self.model.device.write(buf.allowed, words)
            buf.allowed_now = key
        buf.allowed_src = allowed

    def collect(self, state: State, plan: Plan) -> dict[int, np.ndarray]:
        """Wait for the submitted step and read its logits."""
        _, buf = self.graph(state)
        return self._read(buf, plan)

    def _read(self, buf: Buffers, plan: Plan) -> dict[int, np.ndarray]:
        n_out = plan.num_out
        if not n_out:
            return {}
        dev = self.model.device
        if plan.sample is not None:
            staging = buf.staging if plan.ring is None else self.id_rings(buf)[plan.ring]
            raw = dev.read_staging(staging, n_out * 4, plan.submitted)
            ids = np.frombuffer(raw, np.uint32)[:n_out].astype(np.int64)
            return {b: ids[i : i + 1] for i, b in enumerate(plan.want)}
        width = self.model.info.num_emb if plan.hidden else self.model.info.num_vocab
        size = n_out * width * 4
        logits = np.frombuffer(dev.read_staging(buf.staging, size, plan.submitted), np.float32)[: n_out * width]
        logits = logits.reshape(n_out, width)
        result: dict[int, np.ndarray] = {}
        row = 0
        for b, (_, rows) in zip(plan.want, plan.out_rows):
            result[b] = logits[row : row + rows]
            row += rows
        return result
