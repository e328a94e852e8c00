"""Sampling on the GPU: one token id per logits row (temperature, top-p, top-k, a uniform draw)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..gpu import Act, Counter, Graph, pack_params

PARAMS = np.dtype([(n, "<u4") for n in ("v", "_pad0", "_pad1", "_pad2")])
WG = 256


def sample_rows(graph: Graph, counter: Counter, logits: Act, row_params: Any, ids: Any, *, label: str = "sample") -> None:
    """Record ``ids[r] = choice(logits[r])`` for the counter's R rows.

    Shapes: logits [R, V] (packed); row_params f32 [R, 4] = (temperature, top_p, top_k, u);
    ids u32 [R]. See shaders/sample.wgsl for the rule (temperature 0 is argmax).
    """
    params = pack_params(PARAMS, v=logits.cols, _pad0=0, _pad1=0, _pad2=0)
    graph.dispatch("sample", counter, params, [logits.buffer, row_params, ids], lambda n: (n, 1, 1), label=label, WG=WG)


def reference(logits: np.ndarray, temperature: float, top_p: float, top_k: int, u: float) -> int:
    """The same rule in numpy (float64), for tests."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = np.exp((logits.astype(np.float64) - logits.max()) / temperature)
    p = z / z.sum()
    order = np.sort(p)[::-1]
    mass = np.cumsum(order)
    n = min(int(np.searchsorted(mass, top_p - 1e-12) + 1), p.size)
    if top_k > 0:
        n = max(n, min(int(top_k), p.size))
    tau = order[n - 1]
    kept = np.where(p >= tau, p, 0.0)
    target = min(u, 0.99999994) * kept.sum()
    idx = int(np.searchsorted(np.cumsum(kept), target, side="right"))
    return min(idx, int(np.flatnonzero(kept)[-1]))
