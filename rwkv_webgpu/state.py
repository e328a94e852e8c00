"""Recurrent state of a batch of sequences ("slots"), kept on the GPU.

Each layer holds named parts, each ``[B, *slot_shape]`` f32 in its own buffer. For RWKV-5..7:
``att_shift [B, C]``, ``wkv [B, H, N, N]`` (row = value index, column = key index),
``ffn_shift [B, C]``. The model decides the parts (``Model.state_spec``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CheckpointError, StateError

if TYPE_CHECKING:
    from .gpu import Device
    from .models.base import Model

StateSpec = dict[str, tuple[int, ...]]
STATE_FORMAT = "rwkv-webgpu-state"
STATE_FORMAT_VERSION = "1"


def model_signature(model: Model) -> dict[str, str]:
    """What a state file records about its model; a file is refused by a model it does not match."""
    i = model.info
    return {
        "version": i.sub_version or i.version.value,
        "num_layer": str(i.num_layer),
        "num_emb": str(i.num_emb),
        "num_head": str(i.num_head),
        "head_size": str(i.head_size),
    }


class State:
    """GPU state for ``batch_size`` slots of one model. Create with :meth:`Model.new_state`."""

    def __init__(self, model: Model, batch_size: int, spec: StateSpec, *, fresh: bool = True):
        if batch_size < 1:
            raise StateError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.device: Device = model.device
        self.batch_size = batch_size
        self.spec = dict(spec)
        self.layers: list[dict[str, Any]] = []
        for i in range(model.info.num_layer):
            parts = {}
            for name, shape in self.spec.items():
                parts[name] = self.device.storage(batch_size * int(np.prod(shape)) * 4, f"state.{i}.{name}")
            self.layers.append(parts)
        if fresh:
            self.reset()

    # -- helpers ---------------------------------------------------------------------------
    def _slot_bytes(self, name: str) -> int:
        return int(np.prod(self.spec[name])) * 4

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.batch_size:
            raise StateError(f"slot {slot} is outside this state's batch of {self.batch_size}")

    def check_model(self, model: Model) -> None:
        if model.info != self.model.info:
            raise StateError(f"this state belongs to {self.model.info.describe()}, not {model.info.describe()}")

    # -- whole-state operations --------------------------------------------------------------
    def reset(self, slot: int | None = None) -> None:
        """Set one slot (or all) to the model's initial state (zeros, or a state-tuned start)."""
        slots = range(self.batch_size) if slot is None else [slot]
        init = self.model.initial_state()
        for s in slots:
            self._check_slot(s)
            self.set_slot(s, init)

    def clone(self) -> State:
        """An independent copy on the GPU."""
        other = State(self.model, self.batch_size, self.spec, fresh=False)
        enc = self.device.device.create_command_encoder()
        self.encode_copy(enc, other)
        self.device.queue.submit([enc.finish()])
        return other

    def encode_copy(self, encoder: Any, other: State) -> None:
        """Record copies of every part into ``other`` (same model and batch size) on ``encoder``:
        ordered with the steps around it, nothing waits."""
        for src, dst in zip(self.layers, other.layers):
            for name in self.spec:
                encoder.copy_buffer_to_buffer(src[name], 0, dst[name], 0, src[name].size)

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Every part as ``[L, B, *slot_shape]`` float32 arrays."""
        out = {}
        for name, shape in self.spec.items():
            n = self.batch_size * int(np.prod(shape))
            rows = [self.device.read(layer[name], np.float32)[:n] for layer in self.layers]
            out[name] = np.stack(rows).reshape(len(self.layers), self.batch_size, *shape)
        return out

    def load_numpy(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the state with arrays shaped like :meth:`to_numpy`'s."""
        for name, shape in self.spec.items():
            want = (len(self.layers), self.batch_size, *shape)
            arr = arrays.get(name)
            if arr is None or tuple(arr.shape) != want:
                got = None if arr is None else tuple(arr.shape)
                raise StateError(f"state part {name!r}: expected shape {want}, got {got}")
        for i, layer in enumerate(self.layers):
            for name in self.spec:
                self.device.write(layer[name], np.ascontiguousarray(arrays[name][i], dtype=np.float32))

    # -- per-slot operations ----------------------------------------------------------------
    def get_slot(self, slot: int) -> dict[str, np.ndarray]:
        """One slot as ``[L, *slot_shape]`` arrays."""
        self._check_slot(slot)
        out = {}
        for name, shape in self.spec.items():
            nb = self._slot_bytes(name)
            rows = [self.device.read(layer[name], np.float32, slot * nb, nb) for layer in self.layers]
            out[name] = np.stack(rows).reshape(len(self.layers), *shape)
        return out

    def set_slot(self, slot: int, arrays: dict[str, np.ndarray]) -> None:
        """Write one slot from ``[L, *slot_shape]`` arrays."""
        self._check_slot(slot)
        for name, shape in self.spec.items():
            want = (len(self.layers), *shape)
            arr = arrays.get(name)
            if arr is None or tuple(arr.shape) != want:
                got = None if arr is None else tuple(arr.shape)
                raise StateError(f"slot state part {name!r}: expected shape {want}, got {got}")
            nb = self._slot_bytes(name)
            for i, layer in enumerate(self.layers):
                self.device.write(layer[name], np.ascontiguousarray(arr[i], dtype=np.float32), slot * nb)

    def copy_slot(self, src: int, dst: int, other: State | None = None) -> None:
        """Copy slot ``src`` of this state into slot ``dst`` of ``other`` (default: this state)."""
        target = other or self
        self._check_slot(src)
        target._check_slot(dst)
        if target.spec != self.spec:
            raise StateError("cannot copy between states of different models")
        if target is self:  # WebGPU cannot copy a buffer onto itself
            self.set_slot(dst, self.get_slot(src))
            return
        enc = self.device.device.create_command_encoder()
        for a, b in zip(self.layers, target.layers):
            for name in self.spec:
                nb = self._slot_bytes(name)
                enc.copy_buffer_to_buffer(a[name], src * nb, b[name], dst * nb, nb)
        self.device.queue.submit([enc.finish()])

    def extract(self, slot: int) -> State:
        """A new one-slot state holding a copy of ``slot``."""
        out = State(self.model, 1, self.spec, fresh=False)
        self.copy_slot(slot, 0, out)
        return out

    def insert(self, slot: int, other: State, from_slot: int = 0) -> None:
        """Copy slot ``from_slot`` of ``other`` into ``slot`` of this state."""
        other.copy_slot(from_slot, slot, self)

    # -- files --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write every slot to a safetensors file (atomically: a crash never leaves half a file)."""
        from .weights.safetensors_io import save_safetensors

        meta = {"format": STATE_FORMAT, "format_version": STATE_FORMAT_VERSION, "batch_size": str(self.batch_size)}
        meta.update(model_signature(self.model))
        save_safetensors(self.to_numpy(), os.fspath(path), meta)

    @classmethod
    def load(cls, model: Model, path: str | os.PathLike[str]) -> State:
        """Read a file written by :meth:`save`; refuses files of another model shape or version."""
        from .weights.safetensors_io import SafetensorsReader

        where = os.fspath(path)
        if not os.path.isfile(where):
            raise CheckpointError(f"no such state file: {where}")
        reader = SafetensorsReader(where)
        try:
            meta = reader.metadata
            if meta.get("format") != STATE_FORMAT:
                raise StateError(f"{where} is not a saved rwkv-webgpu state (no '{STATE_FORMAT}' metadata)")
            want = model_signature(model)
            diff = {k: (meta.get(k), v) for k, v in want.items() if meta.get(k) != v}
            if diff:
                detail = ", ".join(f"{k}: file {a}, model {b}" for k, (a, b) in diff.items())
                raise StateError(f"{where} was saved from a different model ({detail})")
            arrays = {name: np.array(reader.view(name), dtype=np.float32) for name in reader.names()}
        finally:
            reader.close()
        batch = int(meta.get("batch_size", "0") or 0)
        state = cls(model, max(batch, 1), model.state_spec(), fresh=False)
        state.load_numpy(arrays)
        return state

    def __repr__(self) -> str:
        return f"State(batch_size={self.batch_size}, model={self.model.info.describe()!r})"
