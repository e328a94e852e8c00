"""Record a forward pass once, replay it every step.

A :class:`Graph` holds dispatches whose pipelines, parameter uniforms and bind groups are
created when the graph is built. Each step only writes the row counters, then encodes the
recorded list into one command buffer: no pipeline or bind-group creation per step.
"""

from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .tensor import BufferRange

if TYPE_CHECKING:
    from .device import Device

Grid = Callable[[int], tuple[int, int, int]]
PROGRAMS_KEPT = 16  # encoded step shapes remembered per graph (decoding needs one, prompts a few)


@functools.cache
def _native_calls() -> Any:
    """wgpu-native's C functions without wgpu-py's per-call error capture, or None.

    Replaying a recorded step makes ~1000 pass calls; through the public API each costs
    5-15 us of Python on a fast host, enough to make batch-1 decoding wait on the host. Pass
    commands are validated when the pass ends (``end()`` and ``finish()`` still go through the
    public API), so errors are reported as before.
    """
    try:
        from wgpu.backends.wgpu_native._ffi import ffi, lib
    except ImportError:  # another backend: the public API only
        return None
    names = ("wgpuComputePassEncoderSetPipeline", "wgpuComputePassEncoderSetBindGroup",
             "wgpuComputePassEncoderDispatchWorkgroups")  # fmt: skip
    if not all(hasattr(lib, n) for n in names):
        return None
    return ffi, lib


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Counter:
    """A small uniform ``struct Count { n: u32 }`` that sizes the dispatches bound to it.

    ``set`` writes the GPU copy (a queue operation, ordered with submissions); ``value`` is the
    count the next encoding sizes its grids with, so a step can be encoded ahead of its writes.
    """

    def __init__(self, device: Device, label: str):
        self.device = device
        self.buffer = device.uniform(np.zeros(4, np.uint32), label)
        self.value = 0
        self.written = -1

    def set(self, n: int) -> None:
        self.value = n
        if n != self.written:
            self.device.write(self.buffer, np.array([n, 0, 0, 0], np.uint32))
            self.written = n


@dataclass
class Dispatch:
    pipeline: Any
    bind_group: Any
    counter: Counter
    grid: Grid
    label: str


@dataclass
class Copy:
    """A buffer copy whose ranges are decided when the step is encoded (from ``context``)."""

    encode: Callable[[Any, Any], None]
    label: str


def pack_params(dtype: np.dtype, **values: float) -> np.ndarray:
    """Fill a numpy structured scalar that mirrors a WGSL ``struct Params``."""
    missing = set(dtype.names or ()) - set(values)
    extra = set(values) - set(dtype.names or ())
    if missing or extra:
        raise ValueError(f"params mismatch: missing {sorted(missing)}, unknown {sorted(extra)}")
    arr = np.zeros(1, dtype)
    for name, value in values.items():
        arr[name] = value
    return arr


def _gated(grid: Grid, condition: Callable[[], bool]) -> Grid:
    return lambda n: grid(n) if condition() else (0, 0, 0)


class Graph:
    """An ordered list of dispatches and copies, encoded into one command buffer per step."""

    def __init__(self, device: Device):
        self.device = device
        self.items: list[Dispatch | Copy] = []
        self.captures: list[Any] = []  # tensors hooks asked to read back after each step
        self._conditions: list[Callable[[], bool]] = []
        # per step shape: the dispatches that run, with their grids (see encode's ``key``)
        self._programs: OrderedDict[Hashable, list[Any]] = OrderedDict()
        self.native = _native_calls()

    @contextlib.contextmanager
    def only_when(self, condition: Callable[[], bool]) -> Iterator[None]:
        """Dispatches recorded inside run only on steps where ``condition()`` holds when the
        step is encoded (two recorded variants of one computation, one picked per step)."""
        self._conditions.append(condition)
        try:
            yield
        finally:
            self._conditions.pop()

    def dispatch(
        self,
        shader: str,
        counter: Counter,
        params: np.ndarray,
        buffers: Sequence[Any] | dict[int, Any],
        grid: Grid,
        *,
        entry: str = "main",
        label: str = "",
        **constants: float,
    ) -> Dispatch:
        dev = self.device
        pipeline = dev.pipelines.get(shader, entry, **constants)
        uni = dev.uniform(params, f"{label or shader}.params")
        entries = [
            {"binding": 0, "resource": {"buffer": counter.buffer, "offset": 0, "size": counter.buffer.size}},
            {"binding": 1, "resource": {"buffer": uni, "offset": 0, "size": uni.size}},
        ]
        numbered = buffers.items() if isinstance(buffers, dict) else enumerate(buffers, start=2)
        for i, buf in numbered:
            if isinstance(buf, BufferRange):
                entries.append({"binding": i, "resource": {"buffer": buf.buffer, "offset": buf.offset, "size": buf.size}})
            else:
                entries.append({"binding": i, "resource": {"buffer": buf, "offset": 0, "size": buf.size}})
        group = dev.device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=entries)
        for cond in self._conditions:
            grid = _gated(grid, cond)
        item = Dispatch(pipeline, group, counter, grid, label or shader)
        self.items.append(item)
        self._programs.clear()
        return item

    def copy(self, encode: Callable[[Any, Any], None], label: str = "copy") -> None:
        self.items.append(Copy(encode, label))
        self._programs.clear()

    def extend(self, other: Graph) -> None:
        self.items.extend(other.items)
        self._programs.clear()

    def encode(self, encoder: Any, context: Any = None, profiler: Profiler | None = None, key: Hashable = None) -> int:
        """Record every item into ``encoder`` with grids sized from each counter's ``value``;
        ``context`` is handed to the copies. With a ``profiler`` every dispatch gets its own pass
        with GPU timestamps (slower; for finding where time goes). Returns the dispatch count.

        ``key`` names the step's shape: the caller promises that every counter value and
        ``only_when`` condition is the same whenever the key is. The grids are then worked
        out once per key and later encodings replay them through wgpu-native's C calls.
        """
        if key is not None and profiler is None and self.native is not None:
            program = self._programs.get(key)
            if program is None:
                program = self._program()
                self._programs[key] = program
                if len(self._programs) > PROGRAMS_KEPT:
                    self._programs.popitem(last=False)
            else:
                self._programs.move_to_end(key)
            return self._replay(encoder, program, context)
        compute = None
        current = None
        n = 0
        for item in self.items:
            if isinstance(item, Dispatch):
                x, y, z = item.grid(item.counter.value)
                if x == 0 or y == 0 or z == 0:
                    continue
                if profiler is not None:
                    if compute is not None:
                        compute.end()
                    compute = encoder.begin_compute_pass(timestamp_writes=profiler.writes(item.label))
                    current = None
                elif compute is None:
                    compute = encoder.begin_compute_pass()
                    current = None
                if item.pipeline is not current:
                    compute.set_pipeline(item.pipeline)
                    current = item.pipeline
                compute.set_bind_group(0, item.bind_group)
                compute.dispatch_workgroups(x, y, z)
                n += 1
            else:
                if compute is not None:
                    compute.end()
                    compute = None
                item.encode(encoder, context)
        if compute is not None:
            compute.end()
        return n

    def _program(self) -> list[Any]:
        """The items of a step with the current counter values: (pipeline, bind group, x, y, z)
        per dispatch that runs, and the copies."""
        program: list[Any] = []
        for item in self.items:
            if isinstance(item, Dispatch):
                x, y, z = item.grid(item.counter.value)
                if x and y and z:
                    program.append((item.pipeline._internal, item.bind_group._internal, x, y, z))
            else:
                program.append(item)
        return program

    def _replay(self, encoder: Any, program: list[Any], context: Any) -> int:
        ffi, lib = self.native
        set_pipeline = lib.wgpuComputePassEncoderSetPipeline
        set_group = lib.wgpuComputePassEncoderSetBindGroup
        dispatch = lib.wgpuComputePassEncoderDispatchWorkgroups
        no_offsets = ffi.NULL
        compute = raw = current = None
        n = 0
        for op in program:
            if type(op) is tuple:
                if compute is None:
                    compute = encoder.begin_compute_pass()
                    raw, current = compute._internal, None
                pipeline, group, x, y, z = op
                if pipeline != current:
                    set_pipeline(raw, pipeline)
                    current = pipeline
                set_group(raw, 0, group, 0, no_offsets)
                dispatch(raw, x, y, z)
                n += 1
            else:
                if compute is not None:
                    compute.end()
                    compute = None
                op.encode(encoder, context)
        if compute is not None:
            compute.end()
        return n

    def run(self) -> None:
        """Encode and submit once (used by tests and one-off work)."""
        enc = self.device.device.create_command_encoder()
        self.encode(enc)
        self.device.queue.submit([enc.finish()])


class Profiler:
    """GPU time per dispatch label, from timestamp queries (adapters with 'timestamp-query')."""

    def __init__(self, device: Device, capacity: int = 2048):
        import wgpu

        if not device.info.timestamp_query:
            raise RuntimeError(f"{device.info.name} has no timestamp queries")
        self.device = device
        self.capacity = capacity
        self.query = device.device.create_query_set(type=wgpu.QueryType.timestamp, count=2 * capacity)
        self.resolve = device.create_buffer(16 * capacity, wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
        self.labels: list[str] = []

    def writes(self, label: str) -> dict[str, Any]:
        i = len(self.labels)
        if i >= self.capacity:
            raise RuntimeError("profiler capacity exceeded")
        self.labels.append(label)
        return {"query_set": self.query, "beginning_of_pass_write_index": 2 * i, "end_of_pass_write_index": 2 * i + 1}

    def finish(self, encoder: Any) -> None:
        """Call after encoding, before submitting."""
        if self.labels:
            encoder.resolve_query_set(self.query, 0, 2 * len(self.labels), self.resolve, 0)

    def read(self) -> list[tuple[str, float]]:
        """(label, microseconds) per profiled dispatch, in order; then forgets them."""
        n = len(self.labels)
        raw = self.device.read(self.resolve, np.uint64, 0, 16 * n) if n else np.zeros(0, np.uint64)
        ticks = raw.reshape(-1, 2).astype(np.int64)
        out = [(label, float(e - b) / 1000.0) for label, (b, e) in zip(self.labels, ticks)]
        self.labels = []
        return out
