"""Tokenizers behind one protocol: the RWKV World trie tokenizer and HF ``tokenizers`` files.

>>> tok = load_tokenizer("world")
>>> tok.decode(tok.encode("Hello, world"))
'Hello, world'
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from rwkv_webgpu.errors import TokenizerError
from rwkv_webgpu.tokenizer.hf import HFTokenizer
from rwkv_webgpu.tokenizer.world import WorldTokenizer

__all__ = ["HFTokenizer", "Tokenizer", "WorldTokenizer", "load_tokenizer"]


@runtime_checkable
class Tokenizer(Protocol):
    """What the engine needs from a tokenizer."""

    @property
    def vocab_size(self) -> int:
        """Number of token ids (valid ids are ``0 .. vocab_size - 1``)."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; never raises on invalid UTF-8 (it becomes U+FFFD)."""
        ...

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Bytes of ``ids``, for streaming output that may stop inside a character."""
        ...


@functools.lru_cache(maxsize=1)
def _world() -> WorldTokenizer:
    # Built on first use, not at import: loading the vocabulary takes a fraction of a second.
    return WorldTokenizer.from_file(None)


def _looks_like_json(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(256)
    except OSError as exc:
        raise TokenizerError(f"cannot read tokenizer file {path}: {exc}") from exc
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


def load_tokenizer(spec: str | os.PathLike[str] = "world") -> Tokenizer:
    """Load a tokenizer.

    Args:
        spec: ``"world"`` for the RWKV World tokenizer (shared, built once); a path to an
            HF ``tokenizer.json`` (or a directory holding one); or a path to an
            ``rwkv_vocab_*.txt``-format file for a World tokenizer with that vocabulary.

    Raises:
        TokenizerError: the file does not exist or cannot be parsed.
    """
    if isinstance(spec, str) and spec == "world":
        return _world()
    path = Path(spec)
    if path.is_dir() and (path / "tokenizer.json").is_file():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(
            f"no tokenizer file at {path}: pass 'world', a tokenizer.json "
            "or an rwkv_vocab_*.txt file"
        )
    if path.suffix == ".json" or _looks_like_json(path):
        return HFTokenizer.from_file(path)
    return WorldTokenizer.from_file(path)
