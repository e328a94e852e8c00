"""Hugging Face ``tokenizers`` files (``tokenizer.json``) behind the :class:`Tokenizer` protocol."""

from __future__ import annotations

import logging
import operator
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rwkv_webgpu.errors import TokenError, TokenizerError

if TYPE_CHECKING:  # imported lazily so that importing rwkv_webgpu stays light
    import tokenizers

__all__ = ["HFTokenizer"]

logger = logging.getLogger(__name__)


def _byte_level_chars() -> dict[str, int]:
    """Inverse of the GPT-2 byte-level alphabet: printable Latin-1 bytes stand for themselves,
    the other 68 bytes are shifted to U+0100 and up, in byte order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {chr(b): b for b in printable}
    shifted = (b for b in range(256) if b not in chars.values())
    chars.update({chr(0x100 + k): b for k, b in enumerate(shifted)})
    return chars


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` with the engine's tokenizer interface.

    Args:
        tokenizer: the wrapped tokenizer.
        name: shown in error messages.
        add_special_tokens: let the post-processor add BOS/EOS-style tokens when encoding.
        skip_special_tokens: drop special tokens when decoding. Off by default so that
            ``decode(encode(text)) == text`` holds for byte-level BPE vocabularies.
    """

    def __init__(
        self,
        tokenizer: tokenizers.Tokenizer,
        *,
        name: str = "<tokenizer>",
        add_special_tokens: bool = False,
        skip_special_tokens: bool = False,
    ) -> None:
        self.name = name
        self.add_special_tokens = add_special_tokens
        self.skip_special_tokens = skip_special_tokens
        self._tok = tokenizer
        self._vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self._bytes_table: list[bytes] | None = None  # built on first decode_bytes()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **options: bool) -> HFTokenizer:
        """Load a ``tokenizer.json``; ``options`` go to the constructor.

        Raises:
            TokenizerError: the file is missing or is not a valid ``tokenizers`` file.
        """
        import tokenizers

        name = os.fspath(path)
        try:
            tok = tokenizers.Tokenizer.from_file(name)
        except Exception as exc:  # the Rust side raises a bare Exception
            raise TokenizerError(f"cannot load tokenizer file {name}: {exc}") from exc
        logger.debug("loaded %s (%d ids)", name, tok.get_vocab_size(with_added_tokens=True))
        return cls(tok, name=name, **options)

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self._vocab_size

    def __repr__(self) -> str:
        return f"HFTokenizer(name={self.name!r}, vocab_size={self._vocab_size})"

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        try:
            encoding = self._tok.encode(text, add_special_tokens=self.add_special_tokens)
        except Exception as exc:
            raise TokenizerError(f"{self.name} cannot encode the text: {exc}") from exc
        return list(encoding.ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, as the tokenizer's own decoder gives it.

        Raises:
            TokenError: an id is negative or ``>= vocab_size``.
        """
        checked = self._check(ids)
        try:
            return self._tok.decode(checked, skip_special_tokens=self.skip_special_tokens)
        except Exception as exc:
            raise TokenizerError(f"{self.name} cannot decode the ids: {exc}") from exc

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Bytes of ``ids``.

        Exact for byte-level BPE (GPT-2 style, ``ByteLevel`` decoder), so a stream may stop
        inside a UTF-8 character. For other decoders this is ``decode(ids)`` in UTF-8, where a
        cut-off character has already become U+FFFD.

        Raises:
            TokenError: an id is negative or ``>= vocab_size``.
        """
        import tokenizers

        checked = self._check(ids)
        if not isinstance(self._tok.decoder, tokenizers.decoders.ByteLevel):
            return self.decode(checked).encode("utf-8")
        if self._bytes_table is None:
            self._bytes_table = self._byte_level_table()
        table = self._bytes_table
        return b"".join([table[i] for i in checked])

    def _byte_level_table(self) -> list[bytes]:
        chars = _byte_level_chars()
        added = self._tok.get_added_tokens_decoder()
        table: list[bytes] = []
        for i in range(self._vocab_size):
            token = added.get(i)
            if token is not None:  # added tokens are stored as plain text
                skip = token.special and self.skip_special_tokens
                table.append(b"" if skip else token.content.encode("utf-8"))
                continue
            piece = self._tok.id_to_token(i) or ""
            table.append(
                bytes(chars[c] for c in piece)
                if all(c in chars for c in piece)
                else piece.encode("utf-8")
            )
        return table

    def _check(self, ids: Sequence[int]) -> list[int]:
        """``ids`` as a list of ints, each in ``0 .. vocab_size - 1``."""
        checked: list[int] = []
        for pos, token_id in enumerate(ids):
            try:
                index = operator.index(token_id)
            except TypeError:
                raise TokenError(
                    f"token at position {pos} is {token_id!r}, not an integer id"
                ) from None
            if not 0 <= index < self._vocab_size:
                raise TokenError(
                    f"token id {index} at position {pos} is outside the vocabulary of "
                    f"{self.name} (0..{self._vocab_size - 1})"
                )
            checked.append(index)
        return checked
