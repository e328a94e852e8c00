"""The RWKV "World" tokenizer: greedy longest match over the UTF-8 bytes of the text.

At every position the longest vocabulary entry that is a prefix of the remaining bytes is
taken. This reproduces, id for id, the ``TRIE_TOKENIZER`` shipped with the official ``rwkv``
package (benchmarks/bench_tokenizer.py measures both):

* The text is first cut between any two adjacent bytes ``(a, b)`` that never occur next to
  each other inside a vocabulary entry (for example ``b"e "`` or ``b". "``). No token can
  span such a cut, so the greedy walk always lands exactly on it, and each piece can be
  tokenized on its own. Pieces are mostly words, so they repeat and are memoized.
* Inside a piece the longest match is found by walking a trie made of nested dicts.

Vocabulary file format, one token per line: ``<id> <Python str or bytes literal> <length>``,
where ``<length>`` is the byte length of the token's UTF-8 encoding. Literals are read with
:func:`ast.literal_eval`, never ``eval``.
"""

from __future__ import annotations

import ast
import logging
import operator
import os
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from itertools import chain, pairwise
from pathlib import Path
from typing import Any

import numpy as np

from rwkv_webgpu.errors import TokenError, TokenizerError

__all__ = ["DEFAULT_VOCAB", "WorldTokenizer", "read_vocab"]

logger = logging.getLogger(__name__)

DEFAULT_VOCAB = "rwkv_vocab_v20230424.txt"
"""Name of the World vocabulary shipped inside this package."""

# Trie node: dict mapping a byte value (0..255) to the child node; key _ID holds the token id
# when the path from the root to this node spells a whole token.
_ID = 256
# Pieces longer than this are rarely repeated; tokenizing them is not memoized.
_MEMO_MAX_PIECE = 64
_MEMO_MAX_ENTRIES = 1 << 18
# Cut points are found with numpy in blocks of this many bytes to bound temporary memory.
_CUT_BLOCK = 1 << 20
# RWKV checkpoints pad the embedding to a multiple of this many rows.
_VOCAB_PAD = 64


def _parse_literal(literal: str) -> str | bytes:
    """Turn the middle field of a vocabulary line into str/bytes without evaluating code."""
    quote = literal[:1]
    if (
        len(literal) >= 2
        and quote in ("'", '"')
        and literal[-1] == quote
        and "\\" not in literal
        and quote not in literal[1:-1]
    ):
        return literal[1:-1]  # plain quoted text: the common case, 10x faster than ast
    value = ast.literal_eval(literal)
    if not isinstance(value, (str, bytes)):
        raise ValueError(f"expected a str or bytes literal, got {type(value).__name__}")
    return value


def _parse_line(line: str) -> tuple[int, bytes]:
    first, last = line.index(" "), line.rindex(" ")
    if first == last:
        raise ValueError("expected '<id> <literal> <byte length>'")
    token_id = int(line[:first])
    if token_id < 0:
        raise ValueError(f"negative id {token_id}")
    value = _parse_literal(line[first + 1 : last])
    token = value.encode("utf-8") if isinstance(value, str) else value
    if len(token) != int(line[last + 1 :]):
        raise ValueError(f"token is {len(token)} bytes but the line says {line[last + 1 :]}")
    if not token:
        raise ValueError("empty token")
    return token_id, token


def read_vocab(path: str | os.PathLike[str] | None = None) -> dict[int, bytes]:
    """Read a World vocabulary file into ``{id: token bytes}``.

    Args:
        path: an ``rwkv_vocab_*.txt`` file; ``None`` reads the vocabulary shipped with
            this package (:data:`DEFAULT_VOCAB`).

    Raises:
        TokenizerError: the file is missing or unreadable, or a line (named in the message)
            is malformed, repeats an id, or its byte length does not match.
    """
    if path is None:
        name = DEFAULT_VOCAB
        try:
            raw = resources.files(__package__).joinpath(DEFAULT_VOCAB).read_bytes()
        except OSError as exc:
            raise TokenizerError(f"packaged vocabulary {DEFAULT_VOCAB} is missing: {exc}") from exc
    else:
        name = os.fspath(path)
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise TokenizerError(f"cannot read vocabulary file {name}: {exc}") from exc
    vocab: dict[int, bytes] = {}
    # Split on b"\n" only: tokens such as '\x85' or '\u2028' are line breaks to str.splitlines().
    for lineno, raw_line in enumerate(raw.split(b"\n"), start=1):
        raw_line = raw_line.rstrip(b"\r")
        if not raw_line.strip():
            continue
        try:
            token_id, token = _parse_line(raw_line.decode("utf-8"))
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            raise TokenizerError(f"{name}, line {lineno}: not a vocabulary entry ({exc})") from None
        if token_id in vocab:
            raise TokenizerError(f"{name}, line {lineno}: id {token_id} appears twice")
        vocab[token_id] = token
    if not vocab:
        raise TokenizerError(f"vocabulary file {name} has no entries")
    return vocab


class WorldTokenizer:
    """Greedy longest-match byte tokenizer used by RWKV World models.

    Id 0 is end-of-text: no text encodes to it and it decodes to nothing. Encoding is
    thread-safe; the tokenizer is otherwise immutable.

    Args:
        vocab: ``{id: token bytes}``, e.g. from :func:`read_vocab`.
        vocab_size: number of ids a model can emit (its embedding rows). Defaults to the
            largest id plus one, rounded up to a multiple of 64 as RWKV checkpoints pad it
            (65536 for the packaged vocabulary, whose ids are 1..65529).
        name: shown in error messages.
    """

    def __init__(
        self, vocab: Mapping[int, bytes], *, vocab_size: int | None = None, name: str = "<vocab>"
    ) -> None:
        if not vocab:
            raise TokenizerError(f"vocabulary {name} is empty")
        if min(vocab) < 0:
            raise TokenizerError(f"vocabulary {name} has a negative id {min(vocab)}")
        self.name = name
        top = max(vocab)
        padded = -(-(top + 1) // _VOCAB_PAD) * _VOCAB_PAD
        self._vocab_size = padded if vocab_size is None else vocab_size
        if self._vocab_size <= top:
            raise TokenizerError(f"vocab_size {vocab_size} is too small for id {top} in {name}")
        self._id_to_bytes: list[bytes | None] = [None] * self._vocab_size
        self._id_to_bytes[0] = b""
        self._root: dict[int, Any] = {}
        # Like the official tokenizer, when two ids spell the same bytes, the later line wins.
        for token_id, token in vocab.items():
            self._id_to_bytes[token_id] = token
            node = self._root
            for byte in token:
                node = node.setdefault(byte, {})
            node[_ID] = token_id
        self._cut_after = self._cut_table(vocab.values())
        # A piece that is itself a token encodes to that one token (nothing longer fits in
        # it), so the memo of piece -> ids starts out holding the whole vocabulary.
        self._seed_memo: dict[bytes, tuple[int, ...]] = {t: (i,) for i, t in vocab.items()}
        self._memo = dict(self._seed_memo)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str] | None = None, *, vocab_size: int | None = None
    ) -> WorldTokenizer:
        """Load a vocabulary file (``None``: the packaged World vocabulary)."""
        name = DEFAULT_VOCAB if path is None else os.fspath(path)
        vocab = read_vocab(path)
        logger.debug("read %d tokens from %s", len(vocab), name)
        return cls(vocab, vocab_size=vocab_size, name=name)

    @property
    def vocab_size(self) -> int:
        """Number of token ids a model using this vocabulary can produce."""
        return self._vocab_size

    def __repr__(self) -> str:
        return f"WorldTokenizer(name={self.name!r}, vocab_size={self._vocab_size})"

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; ``decode(encode(text)) == text`` always holds.

        Raises:
            TokenizerError: ``text`` contains a lone surrogate (it has no UTF-8 form).
        """
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TokenizerError(
                f"cannot encode a lone surrogate {text[exc.start]!r} at index {exc.start}"
            ) from None
        return self.encode_bytes(data)

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids of raw bytes (any bytes, not only valid UTF-8)."""
        data = bytes(data)  # pieces must be hashable; a no-op (no copy) for bytes
        ends = self._cut_points(data)
        starts = [0, *ends[:-1]]
        # map() keeps the per-piece work in C; Python only runs for pieces not seen before.
        pieces = list(map(data.__getitem__, map(slice, starts, ends)))
        memo = self._memo
        found: list[tuple[int, ...] | None] = list(map(memo.get, pieces))
        if None in found:
            if len(memo) >= _MEMO_MAX_ENTRIES:
                # Replace rather than clear(): another thread may be reading the old dict.
                self._memo = memo = dict(self._seed_memo)
            for k, ids in enumerate(found):
                if ids is None:
                    piece = pieces[k]
                    found[k] = ids = self._match(piece, starts[k])
                    if len(piece) <= _MEMO_MAX_PIECE and len(memo) < _MEMO_MAX_ENTRIES:
                        memo[piece] = ids
        return list(chain.from_iterable(found))  # type: ignore[arg-type]

    @staticmethod
    def _cut_table(tokens: Iterable[bytes]) -> np.ndarray:
        """Bool table indexed by ``a << 8 | b``: True where no token contains bytes ``a, b``."""
        inside = bytearray(1 << 16)
        for token in tokens:
            for a, b in pairwise(token):
                inside[a << 8 | b] = 1
        cut: np.ndarray = np.frombuffer(bytes(inside), dtype=np.uint8) == 0
        return cut

    def _cut_points(self, data: bytes) -> list[int]:
        """Offsets (ascending, ending with ``len(data)``) where no token can cross."""
        n = len(data)
        arr = np.frombuffer(data, dtype=np.uint8)
        cuts: list[int] = []
        for lo in range(0, n - 1, _CUT_BLOCK):
            hi = min(lo + _CUT_BLOCK + 1, n)  # bytes lo..hi-1 give the pairs starting at lo..hi-2
            pairs = (arr[lo : hi - 1].astype(np.uint16) << 8) | arr[lo + 1 : hi]
            cuts += (np.flatnonzero(self._cut_after[pairs]) + (lo + 1)).tolist()
        if n:
            cuts.append(n)
        return cuts

    def _match(self, piece: bytes, offset: int) -> tuple[int, ...]:
        """Greedy longest-match ids of ``piece`` (``offset`` only locates errors)."""
        root = self._root
        ids: list[int] = []
        n = len(piece)
        i = 0
        while i < n:
            node: Any = root
            best_id, best_end = -1, i
            j = i
            while j < n:
                node = node.get(piece[j])
                if node is None:
                    break
                j += 1
                token_id = node.get(_ID)
                if token_id is not None:
                    best_id, best_end = token_id, j
            if best_id < 0:
                raise TokenizerError(
                    f"no token in {self.name} starts with byte 0x{piece[i]:02x} "
                    f"(at byte offset {offset + i})"
                )
            ids.append(best_id)
            i = best_end
        return tuple(ids)

    # -- decoding ---------------------------------------------------------------------------

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The exact bytes spelled by ``ids`` (may end inside a UTF-8 character).

        Raises:
            TokenError: an id is negative, ``>= vocab_size``, or unused by the vocabulary.
        """
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        table = self._id_to_bytes
        try:
            if ids and min(ids) < 0:
                raise IndexError
            return b"".join(map(table.__getitem__, ids))  # type: ignore[arg-type]
        except (IndexError, TypeError, ValueError):
            raise self._bad_id_error(ids) from None

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; invalid UTF-8 (e.g. a cut-off character) becomes U+FFFD.

        Raises:
            TokenError: as :meth:`decode_bytes`.
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def _bad_id_error(self, ids: Sequence[int]) -> TokenError:
        for pos, token_id in enumerate(ids):
            try:
                index = operator.index(token_id)
            except (TypeError, ValueError):
                return TokenError(f"token at position {pos} is {token_id!r}, not an integer id")
            if not 0 <= index < self._vocab_size:
                return TokenError(
                    f"token id {index} at position {pos} is outside the vocabulary "
                    f"(0..{self._vocab_size - 1})"
                )
            if self._id_to_bytes[index] is None:
                return TokenError(
                    f"token id {index} at position {pos} is not used by vocabulary {self.name}"
                )
        return TokenError("token ids could not be decoded")
