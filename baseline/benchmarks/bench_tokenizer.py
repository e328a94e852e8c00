"""Tokenizer throughput: encode/decode MB/s of the World tokenizer on a few MB of mixed text.

Compares against the official ``rwkv.rwkv_tokenizer.TRIE_TOKENIZER`` in the same run when
the ``rwkv`` package is importable. Prints one JSON object to stdout.

    python benchmarks/bench_tokenizer.py [--repeat 3] [--no-official]

"cold" encodes with a freshly built tokenizer (empty piece memo); "warm" encodes the same
text again. Each figure is the best of ``--repeat`` runs (MB = 10**6 bytes of UTF-8).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import platform
import random
import sys
import sysconfig
import time
from collections.abc import Callable
from typing import Any

from rwkv_webgpu.tokenizer.world import WorldTokenizer, read_vocab

logger = logging.getLogger("bench_tokenizer")


def _code_text(limit: int) -> str:
    """Python standard-library sources: code, comments and docstrings."""
    parts: list[str] = []
    size = 0
    for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            parts.append(f.read())
        size += len(parts[-1])
        if size >= limit:
            break
    return "".join(parts)[:limit]


def _english_text() -> str:
    """The Python reference documentation topics shipped with the interpreter (~0.5 MB)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def _multilingual_text(size: int, seed: int = 0) -> str:
    """Seeded mix of CJK, Cyrillic, Arabic, emoji (with ZWJ) and random code points."""
    rng = random.Random(seed)
    ranges = [
        (0x4E00, 0x9FFF),
        (0x3040, 0x30FF),
        (0xAC00, 0xD7A3),
        (0x0400, 0x04FF),
        (0x0600, 0x06FF),
        (0x1F600, 0x1F64F),
        (0x0020, 0x007E),
    ]
    out: list[str] = []
    n = 0
    while n < size:
        roll = rng.random()
        if roll < 0.05:
            word = "\U0001f468\u200d\U0001f469\u200d\U0001f467 "
        elif roll < 0.1:
            cp = rng.randrange(0x20, 0x110000)
            word = chr(cp) if not 0xD800 <= cp < 0xE000 else "?"
        else:
            lo, hi = rng.choice(ranges)
            word = "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6))) + " "
        out.append(word)
        n += len(word.encode("utf-8"))
    return "".join(out)


def _best(fn: Callable[[], Any], repeat: int, setup: Callable[[], Any] | None = None) -> float:
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _official() -> Any | None:
    try:
        from rwkv.rwkv_tokenizer import TRIE_TOKENIZER  # type: ignore[import-untyped]
    except ImportError:
        return None
    from importlib import resources

    vocab = resources.files("rwkv_webgpu.tokenizer").joinpath("rwkv_vocab_v20230424.txt")
    with resources.as_file(vocab) as path:
        return TRIE_TOKENIZER(str(path))


def _time_corpus(
    text: str, vocab: dict[int, bytes], ours: WorldTokenizer, official: Any | None, repeat: int
) -> dict[str, Any]:
    mb = len(text.encode("utf-8")) / 1e6
    ids = ours.encode(text)
    fresh: list[WorldTokenizer] = []
    cold = _best(
        lambda: fresh[-1].encode(text), repeat, setup=lambda: fresh.append(WorldTokenizer(vocab))
    )
    entry: dict[str, Any] = {
        "mb": round(mb, 3),
        "tokens": len(ids),
        "ours_encode_cold_mb_s": round(mb / cold, 2),
        "ours_encode_warm_mb_s": round(mb / _best(lambda: ours.encode(text), repeat), 2),
        "ours_decode_mb_s": round(mb / _best(lambda: ours.decode(ids), repeat), 2),
    }
    if official is not None:
        entry["ids_match_official"] = official.encode(text) == ids
        entry["official_encode_mb_s"] = round(mb / _best(lambda: official.encode(text), repeat), 2)
        entry["official_decode_mb_s"] = round(mb / _best(lambda: official.decode(ids), repeat), 2)
    return entry


def run(repeat: int, with_official: bool) -> dict[str, Any]:
    """Time every corpus and return the JSON-ready report."""
    start = time.perf_counter()
    vocab = read_vocab()
    ours = WorldTokenizer(vocab)
    load_s = time.perf_counter() - start
    official = _official() if with_official else None
    corpora = {
        "code": _code_text(2_000_000),
        "english": _english_text(),
        "multilingual": _multilingual_text(500_000),
    }
    corpora["all"] = "".join(corpora.values())
    results = {
        name: _time_corpus(text, vocab, ours, official, repeat) for name, text in corpora.items()
    }
    for name, entry in results.items():
        logger.info("%s: %s", name, entry)
    return {
        "benchmark": "tokenizer",
        "backend": "cpu",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "ours_load_s": round(load_s, 3),
        "repeat": repeat,
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-official", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    report = run(args.repeat, with_official=not args.no_official)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
