"""y = act(x @ W^T), optionally added into y: every linear layer of every version."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError
from ..gpu import Act, BufferRange, Counter, Graph, Matrix, QMatrix, ceil_div, pack_params
from ..gpu.recorder import Grid
from ..gpu.tensor import MatrixPart

PARAMS = np.dtype(
    [(n, "<u4") for n in ("k", "kv", "rows", "row0", "x_off", "x_stride", "y_off", "y_stride", "act", "accumulate")]
)
ACTIVATIONS = {"none": 0, "tanh": 1, "sigmoid": 2, "relu_sq": 3, "silu": 4}
ROWS = 4  # rows per workgroup (matmul.wgsl)
TOK = 4  # tokens per workgroup (fixed in matmul.wgsl)
TILE = 64  # rows and tokens per workgroup (matmul_tiled.wgsl)
RTOK = 16  # tokens per invocation (matmul.wgsl rowwise; its accumulator array holds 16)
SUBGROUP_FROM = 16  # steps with at least this many tokens use the subgroup kernel (if any)
TILED_FROM = 48  # steps with at least this many tokens use the tiled kernel ...
TILED_MIN_TILES = 128  # ... when that makes at least this many workgroups (H100: 132 SMs)


def matmul(
    graph: Graph,
    counter: Counter,
    x: Act,
    w: Matrix | QMatrix,
    y: Act,
    *,
    act: str = "none",
    accumulate: bool = False,
    kernel: str | None = None,
    label: str = "matmul",
) -> None:
    """Record ``y[t, :R] (+)= act(W @ x[t, :K])`` for the counter's T rows.

    Shapes: x [T, K], W [R, K] (f16, split in row blocks), y [T, >= R]. Both kernels are
    recorded; each step runs the one that suits its token count (the other gets an empty grid):
    a GEMV-style kernel for decoding, a tiled one for prompts (CPU adapters: a barrier-free
    row-per-invocation kernel below the tiled sizes). ``kernel`` ("gemv", "subgroup", "rowwise",
    "tiled") forces one kernel for every token count (tests use it to check each on any adapter).
    """
    _check(x, w, y, act, label)
    if isinstance(w, QMatrix):
        _matmul_quant(graph, counter, x, w, y, act, accumulate, label, kernel)
        return
    for part in w.parts:
        params = pack_params(
            PARAMS,
            k=w.k,
            kv=w.kp // 8,
            rows=part.rows,
            row0=part.row0,
            x_off=x.offset,
            x_stride=x.stride,
            y_off=y.offset,
            y_stride=y.stride,
            act=ACTIVATIONS[act],
            accumulate=int(accumulate),
        )

        for name, grid in _choose(graph, part.rows, kernel):
            entry = "rowwise" if name == "rowwise" else "main"
            shader = {"gemv": "matmul", "rowwise": "matmul"}.get(name, f"matmul_{name}")
            consts = {"WG": 64, "ROWS": ROWS, "RTOK": RTOK} if shader == "matmul" else {}
            suffix = "" if name in ("gemv", "subgroup", "rowwise") else f".{name}"
            graph.dispatch(shader, counter, params, [part.buffer, x.buffer, y.buffer], grid, entry=entry,
                           label=label + suffix, **consts)  # fmt: skip


KERNELS = ("gemv", "subgroup", "rowwise", "tiled")


def _check(x: Act, w: Matrix | QMatrix, y: Act, act: str, label: str) -> None:
    if x.cols != w.k:
        raise ShapeError(f"{label}: input [T, {x.cols}] and weight [R={w.rows}, K={w.k}] do not fit (K differs)")
    if y.cols < w.rows:
        raise ShapeError(f"{label}: output [T, {y.cols}] and weight [R={w.rows}, K={w.k}] do not fit (fewer than R columns)")
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}")


def _choose(graph: Graph, rows: int, kernel: str | None) -> list[tuple[str, Grid]]:
    """The kernels to record for a matrix part and the grid of each (an empty grid skips it).

    Real GPUs: the GEMV-style kernel below SUBGROUP_FROM tokens, the subgroup-shuffle one (where
    the adapter has subgroups) up to TILED_FROM, the tiled kernel above. CPU adapters: the
    barrier-free row-per-invocation kernel below TILED_FROM tokens (barriers cost most there),
    the tiled kernel above.
    """
    grids: dict[str, Grid] = {
        "gemv": lambda n: (ceil_div(rows, ROWS), ceil_div(n, TOK), 1),
        "subgroup": lambda n: (ceil_div(rows, 8), ceil_div(n, TOK), 1),
        "rowwise": lambda n: (ceil_div(rows, 64), ceil_div(n, RTOK), 1),
        "tiled": lambda n: (ceil_div(rows, TILE), ceil_div(n, TILE), 1),
    }
    if kernel is not None:
        if kernel not in grids:
            raise ValueError(f"unknown matmul kernel {kernel!r}; choose from {KERNELS}")
        if kernel == "subgroup" and not graph.device.info.subgroup:
            raise ValueError("the subgroup matmul needs an adapter with the 'subgroup' feature")
        return [(kernel, grids[kernel])]
    info = graph.device.info
    if info.adapter_type.lower() == "cpu":
        # lavapipe: the row-wise kernel costs the same per token at any step size (each token
        # re-reads the rows), tiles win from a few dozen tokens (2x on a 128-token chunk)
        return [
            ("rowwise", lambda n: grids["rowwise"](n) if n < TILED_FROM else (0, 0, 0)),
            ("tiled", lambda n: grids["tiled"](n) if n >= TILED_FROM else (0, 0, 0)),
        ]
    # Thresholds from the H100 (docs/performance.md): the 64-lane GEMV is fastest for decoding,
    # the 8-lane subgroup one for a few dozen tokens (batched decoding), tiles above that.
    mid = "subgroup" if info.subgroup else "gemv"
    few, some, many = grids["gemv"], grids[mid], grids["tiled"]

    def tiles(n: int) -> bool:
        # the tiled kernel only pays off with enough 64 x 64 tiles to fill the GPU
        return n >= TILED_FROM and ceil_div(rows, TILE) * ceil_div(n, TILE) >= TILED_MIN_TILES

    return [
        ("gemv", lambda n: few(n) if n < SUBGROUP_FROM else (0, 0, 0)),
        (mid, lambda n: some(n) if n >= SUBGROUP_FROM and not tiles(n) else (0, 0, 0)),
        ("tiled", lambda n: many(n) if tiles(n) else (0, 0, 0)),
    ]


QUANT_CODE = {"int8": 0, "nf4": 1, "sf4": 2}
QUANT_KERNELS = ("gemv", "tiled")
NO_GRID = (0, 0, 0)


def _matmul_quant(graph: Graph, counter: Counter, x: Act, w: QMatrix, y: Act, act: str, accumulate: bool,
                  label: str, kernel: str | None = None) -> None:  # fmt: skip
    """Quantized weights: the GEMV-style kernel (matmul_quant.wgsl) for decoding, the tiled one
    (matmul_tiled.wgsl on weights_quant.wgsl, kernel "matmul_quant_tiled") for prompts."""
    quant = QUANT_CODE[w.quant.value]
    for part in w.parts:
        params = pack_params(
            PARAMS, k=w.k, kv=w.kp // 8, rows=part.rows, row0=part.row0, x_off=x.offset, x_stride=x.stride,
            y_off=y.offset, y_stride=y.stride, act=ACTIVATIONS[act], accumulate=int(accumulate),
        )  # fmt: skip
        buffers = [part.codes, x.buffer, y.buffer, part.scales]  # bindings 2 to 5
        for name, grid in _choose_quant(graph, part.rows, kernel):
            if name == "gemv":
                graph.dispatch("matmul_quant", counter, params, buffers, grid, label=f"{label}.{w.quant.value}",
                               WG=64, ROWS=ROWS, QUANT=quant)  # fmt: skip
            else:
                graph.dispatch("matmul_quant_tiled", counter, params, buffers, grid,
                               label=f"{label}.{w.quant.value}.tiled", QUANT=quant)  # fmt: skip


def _choose_quant(graph: Graph, rows: int, kernel: str | None) -> list[tuple[str, Grid]]:
    """As :func:`_choose`, for quantized weights: the tiled kernel on the steps where f16 weights
    would tile (CPU adapters included), the GEMV-style one on the others.
    ``kernel`` ("gemv", "tiled") forces one for every step."""
    if kernel is not None:
        if kernel not in QUANT_KERNELS:
            raise ValueError(f"unknown matmul kernel {kernel!r} for quantized weights; "
                             f"choose from {QUANT_KERNELS}")  # fmt: skip
        return _choose(graph, rows, kernel)
    # the f16 rule (TILED_FROM, TILED_MIN_TILES): its "tiled" grid is empty on steps too small
    tiles = dict(_choose(graph, rows, None))["tiled"]
    gemv = _choose(graph, rows, "gemv")[0][1]
    return [
        ("gemv", lambda n: gemv(n) if tiles(n) == NO_GRID else NO_GRID),
        ("tiled", tiles),
    ]


SEGMENT = np.dtype(
    [(n, "<u4") for n in ("row0", "rows", "k", "kv", "w_off", "x_off", "x_stride", "y_sel", "y_off", "y_stride", "act", "accumulate")]
)
GROUP_PARAMS = np.dtype([(n, "<u4") for n in ("segments", "rows", "_pad0", "_pad1")])


@dataclass(frozen=True)
class Product:
    """One ``y (+)= act(W x)`` of a :func:`matmul_group`."""

    x: Act
    w: Matrix | QMatrix
    y: Act
    act: str = "none"
    accumulate: bool = False
    label: str = "matmul"


def matmul_group(
    graph: Graph, counter: Counter, products: list[Product], *, kernel: str | None = None, label: str = "group"
) -> None:
    """Record several independent products that can run at once, as one dispatch for decoding.

    Products whose f16 weights share one buffer (``upload_matrices``), read the same input
    buffer and write at most two output buffers are computed together by matmul_group.wgsl
    for steps below the subgroup sizes (CPU adapters: below the tiled sizes); larger steps and
    the other products run through :func:`matmul` as usual. The result is the same as
    calling :func:`matmul` for each product (the same sums in the same order). ``kernel``
    ("gemv" or "rowwise") forces one group kernel for every step (tests).
    """
    if kernel not in (None, "gemv", "rowwise"):
        raise ValueError(f"unknown group kernel {kernel!r}; choose 'gemv' or 'rowwise'")
    grouped, rest = _groupable(products)
    for pr in rest:
        matmul(graph, counter, pr.x, pr.w, pr.y, act=pr.act, accumulate=pr.accumulate, label=pr.label)
    if not grouped:
        return
    cpu = graph.device.info.adapter_type.lower() == "cpu"
    rowwise, alone = (kernel == "rowwise", False) if kernel else (cpu, True)
    # steps from `limit` tokens run the products one by one (subgroup/tiled kernels)
    limit = (TILED_FROM if cpu else SUBGROUP_FROM) if alone else 1 << 30
    outputs: list = []
    segs = np.zeros(len(grouped), SEGMENT)
    row = 0
    for i, pr in enumerate(grouped):
        _check(pr.x, pr.w, pr.y, pr.act, pr.label)
        if pr.y.buffer not in outputs:
            outputs.append(pr.y.buffer)
        part = pr.w.parts[0]
        assert isinstance(part, MatrixPart) and isinstance(part.buffer, BufferRange)  # _groupable checked
        segs[i] = (row, pr.w.rows, pr.w.k, pr.w.kp // 8, part.buffer.offset // 16, pr.x.offset, pr.x.stride,
                   outputs.index(pr.y.buffer), pr.y.offset, pr.y.stride, ACTIVATIONS[pr.act], int(pr.accumulate))  # fmt: skip
        row += ceil_div(pr.w.rows, ROWS) * ROWS
        if alone:
            with graph.only_when(lambda: counter.value >= limit):
                matmul(graph, counter, pr.x, pr.w, pr.y, act=pr.act, accumulate=pr.accumulate, label=pr.label)
    rows = int(segs[-1]["row0"] + segs[-1]["rows"])
    params = pack_params(GROUP_PARAMS, segments=len(grouped), rows=rows, _pad0=0, _pad1=0)
    weights = grouped[0].w.parts[0].buffer.buffer  # type: ignore[union-attr]
    table = graph.device.upload(segs, f"{label}.segments")
    y1 = outputs[1] if len(outputs) > 1 else graph.device.storage(4, f"{label}.unused")
    buffers = [weights, grouped[0].x.buffer, outputs[0], y1, table]
    with graph.only_when(lambda: counter.value < limit):
        if rowwise:
            graph.dispatch("matmul_group", counter, params, buffers, lambda n: (ceil_div(rows, 64), ceil_div(n, RTOK), 1),
                           entry="rowwise", label=label, WG=64, RTOK=RTOK)  # fmt: skip
        else:
            graph.dispatch("matmul_group", counter, params, buffers, lambda n: (ceil_div(rows, ROWS), ceil_div(n, TOK), 1),
                           label=label, WG=64, ROWS=ROWS)  # fmt: skip


def _groupable(products: list[Product]) -> tuple[list[Product], list[Product]]:
    """Split ``products`` into those one group dispatch can compute and the others."""
    grouped: list[Product] = []
    rest: list[Product] = []
    outputs: set = set()
    for pr in products:
        part = pr.w.parts[0] if isinstance(pr.w, Matrix) and len(pr.w.parts) == 1 else None
        fits = (
            part is not None
            and isinstance(part.buffer, BufferRange)
            and (not grouped or part.buffer.buffer is grouped[0].w.parts[0].buffer.buffer)  # type: ignore[union-attr]
            and (not grouped or pr.x.buffer is grouped[0].x.buffer)
            and (pr.y.buffer in outputs or len(outputs) < 2)
            and pr.y.buffer is not pr.x.buffer
        )
        if fits:
            grouped.append(pr)
            outputs.add(pr.y.buffer)
        else:
            rest.append(pr)
    if len(grouped) < 2:
        return [], products
    return grouped, rest
