"""The prefix state cache: longest-prefix match, counters, LRU eviction, and what a hit saves."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from toy_tokenizer import ToyTokenizer

import rwkv_webgpu as rw
from rwkv_webgpu.cache import PrefixCache
from rwkv_webgpu.runtime import Engine

MODELS = Path(__file__).resolve().parent / "fixtures" / "models"
CHUNK = 16
GREEDY = rw.SamplingConfig(temperature=0)


@pytest.fixture(scope="module")
def model(vulkan_device):
    m = rw.load_model(MODELS / "v7_L2_C64_V97.pth", device=vulkan_device, token_chunk_size=CHUNK)
    m.tokenizer = ToyTokenizer(m.info.num_vocab)
    return m


def toks(n: int, seed: int, vocab: int = 97) -> list[int]:
    return np.random.default_rng(seed).integers(1, vocab, n).tolist()


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def entry_bytes(model) -> int:
    arrays = model.new_state().get_slot(0)
    return sum(a.nbytes for a in arrays.values()) + model.info.num_vocab * 4


def test_longest_prefix_match_and_counters(model):
    cache = PrefixCache(model)
    seq = toks(12, 1)
    state = model.new_state()
    logits = {}
    done = 0
    for n in (3, 7):
        logits[n] = model.forward(seq[done:n], state)
        done = n
        cache.store(seq[:n], state, 0, logits[n])
    assert len(cache) == 2 and cache.stats.entries == 2
    assert cache.stats.bytes == 2 * entry_bytes(model)

    n, entry = cache.lookup(seq)  # both prefixes match: the longer wins
    assert n == 7 and np.array_equal(entry.logits, logits[7])
    n, entry = cache.lookup(seq[:7])  # an exact match counts
    assert n == 7
    n, entry = cache.lookup(seq[:6])  # 7 is too long, 3 matches
    assert n == 3 and np.array_equal(entry.logits, logits[3])
    n, entry = cache.lookup(seq[:3] + [seq[3] % 96 + 1] + seq[4:])  # diverges after 3 tokens
    assert n == 3
    assert (cache.stats.hits, cache.stats.misses, cache.stats.tokens_saved) == (4, 0, 7 + 7 + 3 + 3)
    for miss in (seq[:2], [seq[0] % 96 + 1] + seq[1:], []):
        assert cache.lookup(miss) == (0, None)
    assert (cache.stats.hits, cache.stats.misses) == (4, 3)


def test_restore_then_forward_rest_equals_full_forward(model):
    cache = PrefixCache(model)
    seq = toks(30, 2)
    state = model.new_state()
    mid = model.forward(seq[:20], state)
    cache.store(seq[:20], state, 0, mid)
    ref_rest = model.forward(seq[20:], state, full=True)
    full = model.forward(seq, model.new_state(), full=True)

    target = model.new_state(2)
    model.forward([5, 6, 7], target, slot=1)  # whatever was in the slot is replaced
    other_before = target.get_slot(0)
    n, logits = cache.restore(seq, target, slot=1)
    assert n == 20
    assert np.array_equal(logits, mid)
    assert rel(logits, full[19]) <= 1e-5
    rest = model.forward(seq[20:], target, full=True, slot=1)
    assert np.array_equal(rest, ref_rest)  # exactly what the original state gives
    assert rel(rest, full[20:]) <= 1e-5  # and what the whole prompt gives
    assert same(target.get_slot(0), other_before)
    # the returned logits are a copy: changing them does not change the cache
    logits[:] = 0
    assert np.array_equal(cache.lookup(seq)[1].logits, mid)

    # a miss resets the slot to the initial state
    n, logits = cache.restore([9, 9, 9], target, slot=1)
    assert (n, logits) == (0, None)
    assert same(target.get_slot(1), model.initial_state())


def test_lru_eviction_under_max_bytes(model):
    size = entry_bytes(model)
    cache = PrefixCache(model, max_bytes=int(2.5 * size))
    state = model.new_state()
    lg = np.zeros(model.info.num_vocab, np.float32)
    a, b, c, d = ([i] * 2 for i in (1, 2, 3, 4))
    cache.store(a, state, 0, lg)
    cache.store(b, state, 0, lg)
    assert len(cache) == 2
    cache.store(c, state, 0, lg)  # over budget: the least recently used (a) goes
    assert len(cache) == 2 and cache.stats.entries == 2 and cache.stats.bytes == 2 * size
    assert cache.lookup(a) == (0, None)
    assert cache.lookup(b)[0] == 2  # b is now the most recently used
    cache.store(d, state, 0, lg)  # so c goes
    assert cache.lookup(c) == (0, None)
    assert cache.lookup(b)[0] == 2 and cache.lookup(d)[0] == 2
    # storing an existing key again replaces it without counting it twice
    cache.store(d, state, 0, lg + 1)
    assert len(cache) == 2 and cache.stats.bytes == 2 * size
    assert np.array_equal(cache.lookup(d)[1].logits, lg + 1)
    # an entry larger than the whole cache is not stored and evicts nothing
    tiny = PrefixCache(model, max_bytes=size - 1)
    tiny.store(a, state, 0, lg)
    assert len(tiny) == 0 and tiny.stats.bytes == 0
    # prefixes shorter than min_tokens are not stored
    picky = PrefixCache(model, min_tokens=3)
    picky.store(a, state, 0, lg)
    assert len(picky) == 0
    picky.store(a + [1], state, 0, lg)
    assert len(picky) == 1
    cache.clear()
    assert len(cache) == 0 and cache.stats.bytes == 0 and cache.lookup(b) == (0, None)


def test_cache_hit_skips_the_prefix(model):
    """Same long prompt twice through the engine: the second prefills nothing, is faster, and
    generates the same tokens; a prompt extending it prefills only the new tokens."""
    prompt = toks(160, 3)
    cache = PrefixCache(model)
    with Engine(model, max_batch=2, cache=cache) as engine:
        engine.generate(toks(3, 99), max_tokens=1, sampling=GREEDY)  # warm up pipelines and thread
        runs = []
        for _ in range(2):
            before = engine.stats.prefill_tokens
            t0 = time.perf_counter()
            c = engine.generate(prompt, max_tokens=4, sampling=GREEDY, stop_at_eos=False)
            runs.append((c, engine.stats.prefill_tokens - before, time.perf_counter() - t0))
        (c1, p1, t1), (c2, p2, t2) = runs
        assert p1 == len(prompt) and c1.cached_tokens == 0
        assert p2 == 0 and c2.cached_tokens == len(prompt)
        assert c2.tokens == c1.tokens and c2.text == c1.text and c2.finish_reason == "length"
        assert t2 < t1 / 2, (t1, t2)
        assert cache.stats.hits >= 1

        # a longer prompt reuses the cached prefix and prefills only the rest
        longer = prompt + toks(5, 4)
        before = engine.stats.prefill_tokens
        c3 = engine.generate(longer, max_tokens=4, sampling=GREEDY, stop_at_eos=False)
        assert engine.stats.prefill_tokens - before == 5 and c3.cached_tokens == len(prompt)
    # same output as without any cache
    with Engine(model, max_batch=1) as plain:
        assert (
            plain.generate(prompt, max_tokens=4, sampling=GREEDY, stop_at_eos=False).tokens
            == c1.tokens
        )
        assert (
            plain.generate(longer, max_tokens=4, sampling=GREEDY, stop_at_eos=False).tokens
            == c3.tokens
        )
