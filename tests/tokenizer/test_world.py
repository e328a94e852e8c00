"""World tokenizer: ids equal the official rwkv TRIE_TOKENIZER's (golden file), exact round trips,
clear errors. Needs neither torch nor the ``rwkv`` package."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from rwkv_webgpu.errors import TokenError, TokenizerError
from rwkv_webgpu.tokenizer import Tokenizer, WorldTokenizer, load_tokenizer
from rwkv_webgpu.tokenizer import world as world_module

GOLDEN_PATH = Path(__file__).parents[1] / "fixtures" / "tokenizer" / "world_golden.json"
GOLDEN = json.loads(GOLDEN_PATH.read_text("utf-8"))
CASES = GOLDEN["cases"]

Oracle = Callable[[bytes], list[int]]


@pytest.fixture(scope="module")
def tok() -> WorldTokenizer:
    loaded = load_tokenizer("world")
    assert isinstance(loaded, WorldTokenizer)
    return loaded


@pytest.fixture(scope="module")
def oracle(tok: WorldTokenizer) -> Oracle:
    """Slow, obviously-correct longest match: try every length from 128 down to 1."""
    table = {tok.decode_bytes([i]): i for i in range(1, GOLDEN["max_id"] + 1)}

    def encode(data: bytes) -> list[int]:
        ids: list[int] = []
        i = 0
        while i < len(data):
            for length in range(min(128, len(data) - i), 0, -1):
                token_id = table.get(data[i : i + length])
                if token_id is not None:
                    ids.append(token_id)
                    i += length
                    break
        return ids

    return encode


def _random_text(rng: random.Random, n: int) -> str:
    pools = [(0x20, 0x7F), (0x00, 0x20), (0x80, 0x800), (0x800, 0xD800), (0xE000, 0x10000)]
    pools += [(0x10000, 0x110000), (0x4E00, 0xA000), (0x1F300, 0x1FAFF)]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(pools)
        out.append(chr(rng.randrange(lo, hi)))
        if rng.random() < 0.2:
            out.append(rng.choice([" ", "  ", "\n", "\r\n", "\u200d", "\u0301", "the", "\t\t"]))
    return "".join(out)


def test_packaged_vocab_is_the_golden_one(tok: WorldTokenizer) -> None:
    packaged = resources.files("rwkv_webgpu.tokenizer").joinpath(GOLDEN["vocab_file"])
    assert hashlib.sha256(packaged.read_bytes()).hexdigest() == GOLDEN["vocab_sha256"]
    digest = hashlib.sha256()
    for i in range(1, GOLDEN["max_id"] + 1):
        token = tok.decode_bytes([i])
        digest.update(i.to_bytes(4, "little") + len(token).to_bytes(4, "little") + token)
    assert digest.hexdigest() == GOLDEN["id_bytes_sha256"]


def test_is_a_tokenizer(tok: WorldTokenizer) -> None:
    assert isinstance(tok, Tokenizer)
    assert load_tokenizer() is tok  # "world" is built once


def test_vocab_size(tok: WorldTokenizer) -> None:
    assert GOLDEN["max_id"] == 65529
    assert tok.vocab_size == 65536
    assert tok.decode_bytes([65529]) == b" " * 128
    for unused in range(65530, 65536):
        with pytest.raises(TokenError, match=str(unused)):
            tok.decode([unused])


@pytest.mark.parametrize("index", range(len(CASES)))
def test_golden_ids(tok: WorldTokenizer, index: int) -> None:
    case = CASES[index]
    assert tok.encode(case["text"]) == case["ids"]
    assert tok.decode(case["ids"]) == case["text"]


def test_golden_ids_as_one_text(tok: WorldTokenizer, oracle: Oracle) -> None:
    text = "".join(case["text"] for case in CASES)
    assert tok.encode(text) == oracle(text.encode("utf-8"))


def test_random_text_round_trip_and_matches_oracle(tok: WorldTokenizer, oracle: Oracle) -> None:
    rng = random.Random(1234)
    for _ in range(200):
        text = _random_text(rng, rng.randrange(0, 150))
        ids = tok.encode(text)
        assert ids == oracle(text.encode("utf-8"))
        assert tok.decode(ids) == text
        assert 0 not in ids


def test_arbitrary_bytes(tok: WorldTokenizer, oracle: Oracle) -> None:
    rng = random.Random(99)
    for _ in range(100):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        ids = tok.encode_bytes(data)
        assert ids == oracle(data)
        assert tok.decode_bytes(ids) == data
        assert tok.decode(ids) == data.decode("utf-8", errors="replace")


def test_decode_never_raises_on_cut_characters(tok: WorldTokenizer) -> None:
    ids = tok.encode("😀")
    assert len(ids) > 1  # the emoji is spelled with byte tokens
    assert tok.decode(ids[:1]) == "\ufffd"
    assert tok.decode_bytes(ids[:1]) + tok.decode_bytes(ids[1:]) == "😀".encode()


def test_memo_and_blocks_do_not_change_ids(
    tok: WorldTokenizer,
    oracle: Oracle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(7)
    text = " ".join(case["text"] for case in CASES[:40]) + _random_text(rng, 3000)
    expected = oracle(text.encode("utf-8"))
    assert tok.encode(text) == expected
    assert tok.encode(text) == expected  # second call served from the memo
    monkeypatch.setattr(world_module, "_CUT_BLOCK", 7)
    monkeypatch.setattr(world_module, "_MEMO_MAX_ENTRIES", 70_000)
    fresh = WorldTokenizer(world_module.read_vocab())
    assert fresh.encode(text) == expected
    assert fresh.encode(text) == expected


def test_end_of_text_token(tok: WorldTokenizer) -> None:
    assert tok.decode([0]) == ""
    assert tok.decode([0, *tok.encode("hi"), 0]) == "hi"
    assert tok.encode("") == []
    assert tok.decode([]) == ""


def test_numpy_ids(tok: WorldTokenizer) -> None:
    ids = tok.encode("numpy ids work")
    assert tok.decode(np.array(ids, dtype=np.int64)) == "numpy ids work"  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, 65536, 10**12, -(10**12)])
def test_out_of_range_id(tok: WorldTokenizer, bad: int) -> None:
    with pytest.raises(TokenError, match=str(bad)):
        tok.decode([1, 2, bad])
    with pytest.raises(TokenError, match="position 2"):
        tok.decode_bytes([1, 2, bad])


def test_non_integer_id(tok: WorldTokenizer) -> None:
    with pytest.raises(TokenError, match="not an integer"):
        tok.decode([1, "2"])  # type: ignore[list-item]


def test_lone_surrogate_is_refused(tok: WorldTokenizer) -> None:
    with pytest.raises(TokenizerError, match="index 2"):
        tok.encode("ab\ud800cd")


# -- custom vocabulary files ----------------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "rwkv_vocab_test.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


SMALL_VOCAB = (
    "".join(f"{i} {ch!r} 1\n" for i, ch in enumerate(["a", "b", " ", "\n", "'", '"'], start=1))
    + "7 'ab' 2\n8 'aba' 3\n9 b'\\xe4\\xb8' 2\n10 b'\\xad' 1\n11 '\\u4e2d' 3\n12 \"it's\" 4\n"
)


def test_custom_vocab_file(tmp_path: Path) -> None:
    tok = load_tokenizer(_write(tmp_path, SMALL_VOCAB))
    assert isinstance(tok, WorldTokenizer)
    assert tok.vocab_size == 64  # ids 0..12 padded to a multiple of 64
    assert tok.encode("abab\n") == [8, 2, 4]
    assert tok.encode("中") == [11]
    assert tok.decode_bytes([9, 10]) == "中".encode()
    assert tok.decode([12, 5, 6]) == "it's'\""
    with pytest.raises(TokenizerError, match="0x63"):  # no token for "c"
        tok.encode("abc")


def test_custom_vocab_size(tmp_path: Path) -> None:
    path = _write(tmp_path, SMALL_VOCAB)
    assert WorldTokenizer.from_file(path, vocab_size=13).vocab_size == 13
    with pytest.raises(TokenizerError, match="too small"):
        WorldTokenizer.from_file(path, vocab_size=12)


def test_missing_vocab_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(TokenizerError, match="nope.txt"):
        load_tokenizer(missing)
    with pytest.raises(TokenizerError, match="nope.txt"):
        WorldTokenizer.from_file(missing)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("2 'abc' 4", "3 bytes"),
        ("2 123 3", "str or bytes"),
        ("x 'a' 1", "line 2"),
        ("2 'unterminated 1", "line 2"),
        ("2'a'1", "line 2"),
        ("1 'z' 1", "twice"),
        ("2 '' 0", "empty"),
    ],
)
def test_garbled_vocab_line(tmp_path: Path, line: str, why: str) -> None:
    path = _write(tmp_path, f"1 'a' 1\n{line}\n3 'c' 1\n")
    with pytest.raises(TokenizerError, match=why) as info:
        load_tokenizer(path)
    assert str(path) in str(info.value) and "line 2" in str(info.value)


def test_vocab_is_not_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _write(tmp_path, f"1 'a' 1\n2 open({str(marker)!r}, 'w') 1\n")
    with pytest.raises(TokenizerError, match="line 2"):
        load_tokenizer(path)
    assert not marker.exists()


def test_vocab_not_utf8_or_empty(tmp_path: Path) -> None:
    path = tmp_path / "rwkv_vocab_bad.txt"
    path.write_bytes(b"1 'a' 1\n2 '\xff' 1\n")
    with pytest.raises(TokenizerError, match="line 2"):
        load_tokenizer(path)
    with pytest.raises(TokenizerError, match="no entries"):
        load_tokenizer(_write(tmp_path, "\n\n"))
