"""HF ``tokenizers`` wrapper: tiny tokenizers trained in memory, saved to tmp_path, reloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer as RawTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from rwkv_webgpu.errors import TokenError, TokenizerError
from rwkv_webgpu.tokenizer import HFTokenizer, Tokenizer, load_tokenizer
from rwkv_webgpu.tokenizer.hf import _byte_level_chars

CORPUS = [
    "hello world, hello tokenizers",
    "The quick brown fox jumps over the lazy dog.",
    "héllo wörld 你好世界 😀",
    "def f(x):\n    return x + 1\n",
] * 5

TEXTS = [
    "hello world",
    "The lazy dog jumps.",
    "unseen words: zyxw qqq",
    "héllo 你好 😀👨\u200d👩\u200d👧 e\u0301",
    "  leading and trailing  \n\r\n\t",
    "special <|endoftext|> inside",
    "",
]


@pytest.fixture(scope="module")
def bpe_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPT-2 style byte-level BPE with one special token."""
    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
    )
    raw.train_from_iterator(CORPUS, trainer=trainer)
    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    raw.save(str(path))
    return path


@pytest.fixture(scope="module")
def wordlevel_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = RawTokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(CORPUS, trainer=trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    path = tmp_path_factory.mktemp("wl") / "tokenizer.json"
    raw.save(str(path))
    return path


def test_load_and_protocol(bpe_path: Path) -> None:
    tok = load_tokenizer(bpe_path)
    assert isinstance(tok, HFTokenizer)
    assert isinstance(tok, Tokenizer)
    assert tok.vocab_size == RawTokenizer.from_file(str(bpe_path)).get_vocab_size(True)
    assert isinstance(load_tokenizer(bpe_path.parent), HFTokenizer)  # directory with the file


def test_json_is_recognised_by_content(bpe_path: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "tokenizer.model"
    renamed.write_bytes(bpe_path.read_bytes())
    assert isinstance(load_tokenizer(renamed), HFTokenizer)


@pytest.mark.parametrize("text", TEXTS)
def test_byte_level_round_trip(bpe_path: Path, text: str) -> None:
    tok = load_tokenizer(bpe_path)
    ids = tok.encode(text)
    assert all(isinstance(i, int) for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    # Token by token, bytes concatenate exactly even where a character is split.
    assert b"".join(tok.decode_bytes([i]) for i in ids) == text.encode("utf-8")


def test_byte_level_partial_character(bpe_path: Path) -> None:
    tok = load_tokenizer(bpe_path)
    crab = "🦀".encode()
    ids = tok.encode("🦀")  # unseen in training: split inside the character
    assert len(ids) > 1
    first = tok.decode_bytes(ids[:1])
    assert crab.startswith(first) and first != crab
    assert tok.decode(ids[:1]) == "\ufffd"


def test_special_tokens(bpe_path: Path) -> None:
    keep = HFTokenizer.from_file(bpe_path)
    skip = HFTokenizer.from_file(bpe_path, skip_special_tokens=True)
    ids = keep.encode("a<|endoftext|>b")
    assert keep.decode(ids) == "a<|endoftext|>b"
    assert skip.decode(ids) == "ab"
    assert skip.decode_bytes(ids) == b"ab"


def test_byte_level_alphabet_matches_tokenizers() -> None:
    chars = _byte_level_chars()
    assert sorted(chars) == sorted(pre_tokenizers.ByteLevel.alphabet())
    assert sorted(chars.values()) == list(range(256))


def test_word_level(wordlevel_path: Path) -> None:
    tok = load_tokenizer(wordlevel_path)
    ids = tok.encode("hello world")
    assert tok.decode(ids) == "hello world"
    assert tok.decode_bytes(ids) == b"hello world"


@pytest.mark.parametrize("bad", [-1, 320, 10**9])
def test_out_of_range_id(bpe_path: Path, bad: int) -> None:
    tok = load_tokenizer(bpe_path)
    with pytest.raises(TokenError, match=str(bad)):
        tok.decode([0, bad])
    with pytest.raises(TokenError, match=str(bad)):
        tok.decode_bytes([bad])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="missing.json"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(TokenizerError, match="missing.json"):
        HFTokenizer.from_file(tmp_path / "missing.json")


@pytest.mark.parametrize("content", ['{"not": "a tokenizer"}', "{garbled", "[1, 2, 3]"])
def test_garbled_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        load_tokenizer(path)
