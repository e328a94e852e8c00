"""Sampling on the GPU: one token id per logits row (temperature, top-p, top-k, a uniform draw)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..gpu import Act, Counter, Graph, pack_params

PARAMS = np.dtype([(n, "<u4") for n in ("v", "_pad0", "_pad1", "_pad2")])
WG = 256  # invocations per row; GPUs that allow it take BIG_WG (one workgroup reads the whole
BIG_WG = 1024  # row, so more invocations keep more loads in flight)
BIG_WG_STORAGE = 32768  # the workgroup memory sample.wgsl needs with BIG_WG (~29 KiB)


def sample_workgroup(info: Any) -> int:
    """Invocations per row for the sampling kernel on an adapter."""
    big = not info.cpu and info.max_invocations >= BIG_WG
    return BIG_WG if big and info.max_workgroup_storage >= BIG_WG_STORAGE else WG


def sample_rows(graph: Graph, counter: Counter, logits: Act, row_params: Any, ids: Any, allowed: Any, *,
                label: str = "sample", wg: int | None = None) -> None:  # fmt: skip
    """Record ``ids[r] = choice(logits[r])`` for the counter's R rows.

    Shapes: logits [R, V] (packed); row_params f32 [R, 4] = (temperature, top_p, top_k, u);
    ids u32 [R]; allowed u32 [ceil(V / 32)], the ids that may be chosen as bits (see
    :func:`mask_bits`). See shaders/sample.wgsl for the rule (temperature 0 is argmax).
    ``wg``: invocations per row (default: :func:`sample_workgroup`; a power of two).
    """
    params = pack_params(PARAMS, v=logits.cols, _pad0=0, _pad1=0, _pad2=0)
    graph.dispatch("sample", counter, params, [logits.buffer, row_params, ids, allowed], lambda n: (n, 1, 1),
                   label=label, WG=wg or sample_workgroup(graph.device.info))  # fmt: skip


def mask_bits(allowed: np.ndarray | None, vocab: int) -> np.ndarray:
    """A boolean ``(V,)`` mask (None: every id) as the kernel's u32 words, bit i = id i."""
    ok = np.ones(vocab, bool) if allowed is None else np.asarray(allowed, bool)
    if ok.shape != (vocab,):
        raise ValueError(f"the allowed mask has shape {ok.shape}, the vocabulary needs ({vocab},)")
    bits = np.packbits(np.pad(ok, (0, (-vocab) % 32)), bitorder="little")
    return np.frombuffer(bits.tobytes(), dtype="<u4").copy()


def reference(logits: np.ndarray, temperature: float, top_p: float, top_k: int, u: float,
              allowed: np.ndarray | None = None) -> int:  # fmt: skip
    """The same rule in numpy (float64), for tests."""
    if allowed is not None:
        logits = np.where(allowed, logits, -3.0e38).astype(np.float32)
    if temperature <= 0:
        return int(np.argmax(logits))
    z = np.exp((logits.astype(np.float64) - logits.max()) / temperature)
    p = z / z.sum()
    order = np.sort(p)[::-1]
    tau = order[min(int(top_k), p.size) - 1] if top_k > 0 else 0.0  # top_k: the k most likely
    if top_p < 1.0:  # the fewest most likely of those holding top_p of their mass
        inside = order[order >= tau]
        n = min(int(np.searchsorted(np.cumsum(inside), top_p * inside.sum() - 1e-12) + 1), inside.size)
        tau = inside[n - 1]
    kept = np.where(p >= tau, p, 0.0)
    target = min(u, 0.99999994) * kept.sum()
    idx = int(np.searchsorted(np.cumsum(kept), target, side="right"))
    return min(idx, int(np.flatnonzero(kept)[-1]))
