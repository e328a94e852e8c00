"""Hooks: named points of the forward pass where user code adds GPU work or reads tensors back.

A hook is a function of a :class:`Frame`, called when the model records its graph (not every
step): it records operations at that point through the frame (``add``, ``scale``, ``capture``,
or a custom kernel via ``frame.graph``). With no hook registered nothing extra is recorded.

Points, the same names for every version (``i`` is the layer)::

    embed            x after ln0                         [T, C]
    {i}.in           residual stream entering layer i     [T, C]
    {i}.att.norm     ln1(x), what the time mix reads      [T, C]
    {i}.att.out      residual stream after the time mix   [T, C]
    {i}.ffn.norm     ln2(x), what the channel mix reads   [T, C]
    {i}.out          residual stream leaving layer i      [T, C]
    head.in          rows sent to the head, before ln_out [R, C]
    logits           the logits read back                 [R, V]

T counts the step's tokens of all slots, packed in slot order; R the rows sent to the head.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import RWKVError

if TYPE_CHECKING:
    from .gpu import Act, Counter, Graph
    from .models.base import Model
    from .state import State

HookFn = Callable[["Frame"], None]


def point_names(num_layer: int) -> list[str]:
    """Every hook point of a model with ``num_layer`` layers, in the order they run."""
    names = ["embed"]
    for i in range(num_layer):
        names += [f"{i}.in", f"{i}.att.norm", f"{i}.att.out", f"{i}.ffn.norm", f"{i}.out"]
    return names + ["head.in", "logits"]


@dataclass
class Frame:
    """What a hook sees at its point while the graph is recorded.

    ``x`` is the tensor at the point (an f32 view, rows = tokens); ``layer`` the layer index
    (None outside layers); ``weights`` the layer's weight object (None outside layers).
    """

    point: str
    layer: int | None
    x: Act
    model: Model
    state: State
    weights: Any
    graph: Graph
    counter: Counter
    registry: HookRegistry

    def add(self, vector: np.ndarray) -> None:
        """``x[t] += vector`` for every row (a steering vector)."""
        self.affine(add=vector)

    def scale(self, factor: float | np.ndarray) -> None:
        """``x[t] *= factor`` (a number, or one per column)."""
        self.affine(mul=factor)

    def affine(self, mul: float | np.ndarray = 1.0, add: float | np.ndarray = 0.0) -> None:
        """``x[t] = x[t] * mul + add`` with per-column ``mul`` and ``add``."""
        from .ops.blend import affine

        cols = self.x.cols
        if np.asarray(mul).size not in (1, cols) or np.asarray(add).size not in (1, cols):
            raise RWKVError(f"hook at {self.point}: vectors must have {cols} values (a number or shape ({cols},))")
        m = np.broadcast_to(np.asarray(mul, np.float32).reshape(-1), (cols,))
        a = np.broadcast_to(np.asarray(add, np.float32).reshape(-1), (cols,))
        vec = self.model.device.upload(np.concatenate([m, a]), f"hook.{self.point}.affine")
        affine(self.graph, self.counter, self.x, vec, label=f"hook.{self.point}")

    def kernel(self, code: str, buffers: Sequence[Any], params: np.ndarray, grid: Callable[[int], tuple[int, int, int]],
               entry: str = "main", **constants: float) -> None:  # fmt: skip
        """Splice a custom WGSL kernel here. ``code`` sees common.wgsl (binding 0 is the row count
        ``count.n``); binding 1 must be a uniform ``Params`` matching ``params`` (a numpy record),
        bindings 2.. are ``buffers`` (e.g. ``frame.x.buffer``); ``grid(n)`` sizes the dispatch."""
        name = self.model.device.pipelines.add_source(code)
        self.graph.dispatch(name, self.counter, params, list(buffers), grid, entry=entry,
                            label=f"hook.{self.point}.kernel", **constants)  # fmt: skip

    def blit(self, dst: Any, dst_offset: int = 0) -> None:
        """Copy this step's rows of the tensor into the GPU buffer ``dst`` (packed ``[rows, cols]``
        f32 from byte ``dst_offset``), for a later kernel of yours to read."""
        x, counter, width = self.x, self.counter, self.x.cols

        def copy(enc: Any, plan: Any) -> None:
            for t in range(counter.value):
                enc.copy_buffer_to_buffer(x.buffer, (x.offset + t * x.stride) * 4, dst, dst_offset + t * width * 4, width * 4)

        self.graph.copy(copy, f"hook.{self.point}.blit")

    def capture(self, key: str | None = None) -> None:
        """Read this tensor back after every step into ``registry.captured[key or point]``."""
        self.registry._capture(self, key or self.point)


@dataclass
class _Capture:
    key: str
    x: Act
    counter: Counter
    buffer: Any


@dataclass
class HookRegistry:
    """The hooks of one model. Changing them makes the model re-record its graphs."""

    hooks: list[tuple[str, HookFn]] = field(default_factory=list)
    captured: dict[str, list[np.ndarray]] = field(default_factory=dict)
    on_change: Callable[[], None] | None = None
    on_fired: Callable[[str, int | None, Any], None] | None = None

    def add(self, pattern: str, fn: HookFn) -> Callable[[], None]:
        """Run ``fn`` at every point matching ``pattern`` (``fnmatch`` style: "12.out", "*.out").
        Returns a function that removes the hook."""
        self.hooks.append((pattern, fn))
        self._changed()

        def remove() -> None:
            if (pattern, fn) in self.hooks:
                self.hooks.remove((pattern, fn))
                self._changed()

        return remove

    def clear(self) -> None:
        self.hooks.clear()
        self.captured.clear()
        self._changed()

    def active(self, point: str) -> list[HookFn]:
        return [fn for pattern, fn in self.hooks if fnmatch.fnmatchcase(point, pattern)]

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _capture(self, frame: Frame, key: str) -> None:
        dev = frame.model.device
        rows = frame.x.max_rows
        buf = dev.storage(rows * frame.x.cols * 4, f"capture.{key}")
        x = frame.x
        counter = frame.counter
        width = x.cols

        def copy(enc: Any, plan: Any) -> None:
            n = counter.value
            if not n:
                return
            if x.stride == width:
                enc.copy_buffer_to_buffer(x.buffer, x.offset * 4, buf, 0, n * width * 4)
            else:
                for t in range(n):
                    enc.copy_buffer_to_buffer(x.buffer, (x.offset + t * x.stride) * 4, buf, t * width * 4, width * 4)

        frame.graph.copy(copy, f"capture.{key}")
        frame.graph.captures.append(_Capture(key, x, counter, buf))

    def collect(self, model: Model, captures: list[Any]) -> None:
        """After a step: read the graph's captured tensors back (called by the step runner)."""
        for cap in captures:
            n = cap.counter.value
            if not n:
                continue
            data = model.device.read(cap.buffer, np.float32, 0, n * cap.x.cols * 4).reshape(n, cap.x.cols)
            self.captured.setdefault(cap.key, []).append(data)
            if self.on_fired is not None:
                self.on_fired(cap.key, None, data)
