"""A tokenizer for the tokenizer-less fixture models: token i <-> the text "w{i} "."""

from __future__ import annotations

from collections.abc import Sequence

from rwkv_webgpu.errors import TokenizerError


class ToyTokenizer:
    """``encode("w3 w17 ") == [3, 17]``; ``decode([3, 17]) == "w3 w17 "``."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in text.split():
            if not (word.startswith("w") and word[1:].isdigit()):
                raise TokenizerError(f"toy tokenizer: {word!r} is not w<number>")
            ids.append(int(word[1:]))
        return ids

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return "".join(f"w{int(i)} " for i in ids).encode()

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode()


def text_of(ids: Sequence[int]) -> str:
    return "".join(f"w{int(i)} " for i in ids)
