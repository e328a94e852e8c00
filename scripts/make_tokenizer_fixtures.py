"""Write tests/fixtures/tokenizer/world_golden.json with ids from the official RWKV tokenizer.

Run once, by hand, where the ``rwkv`` pip package is installed (it needs no torch for this):

    python scripts/make_tokenizer_fixtures.py

The tests then compare rwkv_webgpu's World tokenizer against these ids without ``rwkv``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from importlib import resources
from pathlib import Path
from typing import Any

logger = logging.getLogger("make_tokenizer_fixtures")

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tokenizer" / "world_golden.json"
SEED = 20230424

FIXED_TEXTS = [
    "",
    " ",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.\n",
    "User: What is RWKV?\n\nAssistant: RWKV is an RNN with transformer-level performance.",
    "def forward(self, x: Tensor) -> Tensor:\n    return self.head(self.ln_out(x))\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    '{"key": [1, 2.5e-3, null, true], "nested": {"a": "b"}}',
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    '<html><body><p class="x">Hi &amp; bye</p></body></html>',
    "人工智能是计算机科学的一个分支。我们今天去公园散步吧！",
    "日本語のテキストとカタカナ、ひらがな。",
    "한국어 문장도 토큰화할 수 있습니다.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "مرحبا بالعالم، هذه جملة عربية.",
    "שלום עולם",
    "नमस्ते दुनिया",
    "Ελληνικά: Καλημέρα κόσμε",
    "emoji 😀🎉👍🏽 family 👨\u200d👩\u200d👧\u200d👦 flag 🏳️\u200d🌈 🇺🇸🇯🇵 keycap 1️⃣",
    "combining: e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353\u0354 \u1e9b\u0323",
    "NFC é vs NFD e\u0301; Hangul 한 vs \u1112\u1161\u11ab",
    "control \x00\x01\x02\x07\x08\x0b\x0c\x1b[31mred\x1b[0m\x7f\x85\u2028\u2029",
    "windows\r\nline\r\nendings\r\n\r\n",
    "mixed\n\r\n\r\n\n\t\t\n",
    " " * 300,
    "\t" * 70 + "x" + " " * 129 + "y" + "\n" * 65,
    "a" * 257,
    "=" * 200 + "-" * 81 + "#" * 90,
    "1234567890 3.14159265358979 0xDEADBEEF 1e-10 -42",
    "https://example.com/path?query=1&b=%20#frag user@example.org",
    "\ufeffBOM then text \ufffd replacement \U0010ffff max \U0001d11e clef",
]


def _random_unicode(rng: random.Random, n: int) -> str:
    """Code points from every plane (no surrogates), biased towards ones that occur in text."""
    chars = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.3:
            cp = rng.randrange(0x20, 0x7F)
        elif roll < 0.5:
            cp = rng.randrange(0x80, 0x800)
        elif roll < 0.7:
            cp = rng.randrange(0x800, 0x10000)
        else:
            cp = rng.randrange(0x10000, 0x110000)
        if 0xD800 <= cp < 0xE000:
            cp -= 0x1000
        chars.append(chr(cp))
    return "".join(chars)


def _random_bytes_text(rng: random.Random, n: int) -> str:
    """Random bytes made into text two ways: Latin-1 (every byte a char) and lossy UTF-8."""
    raw = bytes(rng.randrange(256) for _ in range(n))
    return raw.decode("latin-1") if rng.random() < 0.5 else raw.decode("utf-8", "replace")


def _token_soup(rng: random.Random, vocab: dict[int, bytes], n: int) -> str:
    """Concatenated vocabulary entries: stresses where the longest match stops."""
    text_tokens = [t.decode("utf-8") for t in vocab.values() if _is_utf8(t)]
    return "".join(rng.choice(text_tokens) for _ in range(n))


def _is_utf8(token: bytes) -> bool:
    try:
        token.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def build(tokenizer: Any, vocab_path: Path) -> dict[str, Any]:
    """Golden cases: {text, ids} pairs plus a digest of every id's bytes."""
    rng = random.Random(SEED)
    texts = list(FIXED_TEXTS)
    texts += [_random_unicode(rng, rng.randrange(1, 120)) for _ in range(60)]
    texts += [_random_bytes_text(rng, rng.randrange(1, 120)) for _ in range(40)]
    texts += [_token_soup(rng, tokenizer.idx2token, rng.randrange(1, 40)) for _ in range(60)]
    texts += [_random_unicode(rng, 1000) for _ in range(4)]
    texts += ["".join(rng.choice(texts) for _ in range(12)) for _ in range(4)]  # long documents
    cases = [{"text": t, "ids": tokenizer.encode(t)} for t in texts]
    for case in cases:
        assert tokenizer.decode(case["ids"]) == case["text"]
    digest = hashlib.sha256()
    for i in sorted(tokenizer.idx2token):
        token = tokenizer.idx2token[i]
        digest.update(i.to_bytes(4, "little") + len(token).to_bytes(4, "little") + token)
    return {
        "source": "rwkv 0.8.32 rwkv.rwkv_tokenizer.TRIE_TOKENIZER",
        "vocab_file": vocab_path.name,
        "vocab_sha256": hashlib.sha256(vocab_path.read_bytes()).hexdigest(),
        "id_bytes_sha256": digest.hexdigest(),
        "max_id": max(tokenizer.idx2token),
        "cases": cases,
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER  # type: ignore[import-untyped]

    vocab = resources.files("rwkv").joinpath("rwkv_vocab_v20230424.txt")
    with resources.as_file(vocab) as vocab_path:
        golden = build(TRIE_TOKENIZER(str(vocab_path)), Path(vocab_path))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(golden, ensure_ascii=False, separators=(",", ":")), "utf-8")
    logger.info("wrote %d cases, %d bytes to %s", len(golden["cases"]), OUT.stat().st_size, OUT)


if __name__ == "__main__":
    main()
