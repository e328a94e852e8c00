"""Prefix state cache: states of token prefixes seen before, so they are not processed again.

An entry is the state of one slot right after a token prefix (host copies, ``[L, *shape]``
per part) plus the logits of the prefix's last token, so even a full hit can sample at once.
The cache is an LRU bounded in bytes and safe to share between threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .models.base import Model
    from .state import State


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    tokens_saved: int = 0
    entries: int = 0
    bytes: int = 0


@dataclass
class _Entry:
    arrays: dict[str, np.ndarray]
    logits: np.ndarray
    nbytes: int


def _key(tokens: Sequence[int]) -> bytes:
    return np.asarray(tokens, dtype=np.int64).tobytes()


class PrefixCache:
    """Longest-prefix lookup of saved slot states, evicting least recently used beyond ``max_bytes``."""

    def __init__(self, model: Model, max_bytes: int = 256 << 20, min_tokens: int = 1):
        self.model = model
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._lengths: dict[int, int] = {}  # prefix length -> number of entries of that length
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, tokens: Sequence[int]) -> tuple[int, _Entry | None]:
        """The longest cached prefix of ``tokens``: (its length, entry) or (0, None)."""
        ids = np.asarray(tokens, dtype=np.int64)
        with self._lock:
            for n in sorted(self._lengths, reverse=True):
                if n > len(ids):
                    continue
                key = ids[:n].tobytes()
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    self.stats.hits += 1
                    self.stats.tokens_saved += n
                    return n, entry
            self.stats.misses += 1
        return 0, None

    def restore(self, tokens: Sequence[int], state: State, slot: int = 0) -> tuple[int, np.ndarray | None]:
        """Load the longest cached prefix of ``tokens`` into ``slot``; return (matched length,
        last-token logits). With no match the slot is reset and (0, None) returned."""
        n, entry = self.lookup(tokens)
        if entry is None:
            state.reset(slot)
            return 0, None
        state.set_slot(slot, entry.arrays)
        return n, entry.logits.copy()

    def store(self, tokens: Sequence[int], state: State, slot: int, logits: np.ndarray) -> None:
        """Remember ``slot``'s state as the state after ``tokens`` (whose last logits are given)."""
        if len(tokens) < self.min_tokens:
            return
        arrays = state.get_slot(slot)
        nbytes = sum(a.nbytes for a in arrays.values()) + logits.nbytes
        if nbytes > self.max_bytes:
            return
        key = _key(tokens)
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = _Entry(arrays, np.array(logits, np.float32), nbytes)
            self._lengths[len(tokens)] = self._lengths.get(len(tokens), 0) + 1
            self.stats.bytes += nbytes
            while self.stats.bytes > self.max_bytes and self._entries:
                self._drop(next(iter(self._entries)))
            self.stats.entries = len(self._entries)

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        n = len(key) // 8
        self._lengths[n] -= 1
        if not self._lengths[n]:
            del self._lengths[n]
        self.stats.bytes -= entry.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._lengths.clear()
            self.stats.bytes = 0
            self.stats.entries = 0
