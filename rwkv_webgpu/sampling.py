"""Samplers as pure functions of a logits vector and a numpy Generator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen. ``temperature == 0`` means greedy (argmax)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / max(temperature, 1e-8)
    z -= z.max()
    p = np.exp(z)
    return p / p.sum()


def filter_top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """Keep the k most likely tokens (k <= 0 keeps all)."""
    if k <= 0 or k >= probs.size:
        return probs
    keep = np.argpartition(-probs, k - 1)[:k]
    out = np.zeros_like(probs)
    out[keep] = probs[keep]
    return out / out.sum()


def filter_top_p(probs: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose mass reaches p (nucleus sampling)."""
    if p >= 1.0:
        return probs
    order = np.argsort(-probs, kind="stable")
    cum = np.cumsum(probs[order])
    cut = int(np.searchsorted(cum, p)) + 1
    out = np.zeros_like(probs)
    out[order[:cut]] = probs[order[:cut]]
    return out / out.sum()


def sample(logits: np.ndarray, config: SamplingConfig, rng: np.random.Generator) -> int:
    """Choose one token id from ``logits`` (shape ``(V,)``)."""
    if config.temperature == 0:
        return int(np.argmax(logits))
    probs = softmax(logits, config.temperature)
    probs = filter_top_k(probs, config.top_k)
    probs = filter_top_p(probs, config.top_p)
    return int(rng.choice(probs.size, p=probs))
