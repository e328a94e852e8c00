"""Frozen descriptions of a model: its version and dimensions."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Version(enum.Enum):
    """RWKV architecture generation."""

    V4 = "v4"
    V5 = "v5"
    V6 = "v6"
    V7 = "v7"


@dataclass(frozen=True)
class ModelInfo:
    """Dimensions of a checkpoint, read from its tensor shapes.

    Letters follow docs/conventions.md: L layers, C embedding, H heads, N head size,
    F ffn hidden size, V vocabulary.
    """

    version: Version
    num_layer: int  # L
    num_emb: int  # C
    num_head: int  # H (1 for V4)
    head_size: int  # N (C for V4)
    num_vocab: int  # V
    ffn_size: int  # F
    sub_version: str = ""  # "5.0" / "5.1" / "5.2" for V5, "" otherwise
    has_time_state: bool = False
    # Low-rank adapter widths read from the tensors, e.g. (("time_maa", 32), ("time_decay", 64))
    # for V6 and (("w", 64), ("a", 64), ("v", 32), ("g", 128)) for V7; empty for V4/V5.
    lora_ranks: tuple[tuple[str, int], ...] = ()

    def lora_rank(self, name: str) -> int:
        """Width of the named low-rank adapter (see ``lora_ranks``); 0 when absent."""
        return dict(self.lora_ranks).get(name, 0)

    def describe(self) -> str:
        name = self.sub_version or self.version.value
        return (
            f"RWKV {name}: L={self.num_layer} C={self.num_emb} H={self.num_head} "
            f"N={self.head_size} F={self.ffn_size} V={self.num_vocab}"
        )
