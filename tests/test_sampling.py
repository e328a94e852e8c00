"""Each sampler against a plain numpy oracle (written the obvious, slow way), plus the config checks."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from rwkv_webgpu.errors import RWKVError
from rwkv_webgpu.sampling import (
    Sampler,
    SamplingConfig,
    apply_bias,
    apply_penalties,
    draw,
    filter_min_p,
    filter_top_k,
    filter_top_p,
    filter_typical,
    probabilities,
    sample,
    softmax,
    valid_ids,
)
from rwkv_webgpu.tokenizer import WorldTokenizer, load_tokenizer

SIZES = [1, 2, 7, 97, 1000, 65536]


def rand_logits(v: int, seed: int, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(v) * scale).astype(np.float32)


# -- oracles -------------------------------------------------------------------------------------
def o_softmax(logits, t=1.0):
    z = np.asarray(logits, np.float64) / t
    e = np.exp(z - z.max())
    return e / e.sum()


def o_renorm(probs, keep):
    out = np.where(keep, probs, 0.0)
    return out / out.sum()


def o_top_k(probs, k):
    if k <= 0 or k >= len(probs):
        return probs
    order = np.argsort(-probs, kind="stable")
    keep = np.zeros(len(probs), bool)
    keep[order[:k]] = True
    return o_renorm(probs, keep)


def o_smallest_set(probs, order, mass):
    order = np.asarray(order)
    reached = np.cumsum(probs[order]) >= mass * probs.sum()
    keep = np.zeros(len(probs), bool)
    keep[order[: int(np.argmax(reached)) + 1]] = True
    return o_renorm(probs, keep)


def o_top_p(probs, p):
    if p >= 1:
        return probs
    return o_smallest_set(probs, np.lexsort((np.arange(len(probs)), -probs)), p)


def o_typical(probs, mass):
    if mass >= 1:
        return probs
    nz = probs > 0
    h = -np.sum(probs[nz] * np.log(probs[nz]))
    dist = np.full(len(probs), np.inf)
    dist[nz] = np.abs(-np.log(probs[nz]) - h)
    return o_smallest_set(probs, np.lexsort((np.arange(len(probs)), dist)), mass)


def o_min_p(probs, m):
    return o_renorm(probs, probs >= m * probs.max()) if m > 0 else probs


def o_chatrwkv_penalised(logits, occurrence, presence, frequency):
    """ChatRWKV: ``for n in occurrence: out[n] -= alpha_presence + occurrence[n] * alpha_frequency``."""
    out = np.asarray(logits, np.float64).copy()
    for n, count in occurrence.items():
        out[n] -= presence + count * frequency
    return out


# -- step by step ----------------------------------------------------------------------------------
@pytest.mark.parametrize("v", SIZES)
@pytest.mark.parametrize("t", [0.3, 1.0, 2.5])
def test_softmax_with_temperature(v, t):
    z = rand_logits(v, v)
    np.testing.assert_allclose(softmax(z, t), o_softmax(z, t), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("v", SIZES)
@pytest.mark.parametrize("k", [0, 1, 2, 5, 50, 2000])
def test_top_k(v, k):
    probs = o_softmax(rand_logits(v, 10 + v))
    np.testing.assert_allclose(filter_top_k(probs, k), o_top_k(probs, k), rtol=1e-12)


@pytest.mark.parametrize("v", SIZES)
@pytest.mark.parametrize("p", [0.01, 0.3, 0.85, 0.99, 1.0])
@pytest.mark.parametrize("scale", [0.3, 3.0, 12.0])
def test_top_p(v, p, scale):
    probs = o_softmax(rand_logits(v, 20 + v, scale))
    np.testing.assert_allclose(filter_top_p(probs, p), o_top_p(probs, p), rtol=1e-12)


def test_top_p_with_ties_keeps_lowest_ids_first():
    probs = np.array([0.1, 0.2, 0.2, 0.2, 0.2, 0.1])
    out = filter_top_p(probs, 0.5)
    assert np.flatnonzero(out).tolist() == [1, 2, 3]


@pytest.mark.parametrize("v", [2, 7, 97, 1000, 65536])
@pytest.mark.parametrize("mass", [0.2, 0.6, 0.95, 1.0])
def test_typical(v, mass):
    probs = o_softmax(rand_logits(v, 30 + v))
    np.testing.assert_allclose(filter_typical(probs, mass), o_typical(probs, mass), rtol=1e-12)


@pytest.mark.parametrize("v", SIZES)
@pytest.mark.parametrize("m", [0.0, 0.01, 0.1, 0.5, 0.99])
def test_min_p(v, m):
    probs = o_softmax(rand_logits(v, 40 + v))
    np.testing.assert_allclose(filter_min_p(probs, m), o_min_p(probs, m), rtol=1e-12)


def test_filters_with_zero_probabilities():
    probs = np.array([0.0, 0.5, 0.0, 0.3, 0.2, 0.0])
    for f, arg in (
        (filter_top_p, 0.6),
        (filter_typical, 0.6),
        (filter_min_p, 0.5),
        (filter_top_k, 2),
    ):
        out = f(probs, arg)
        assert out[[0, 2, 5]].sum() == 0 and abs(out.sum() - 1) < 1e-12


def test_logit_bias_and_banned():
    z = rand_logits(50, 1)
    bias = {3: 2.5, 7: -1.0, 49: 0.25, 1000: 5.0}  # ids past the vocabulary are ignored
    banned = {0, 11, 12}
    out = apply_bias(z, bias, banned)
    want = z.astype(np.float64).copy()
    for k, b in bias.items():
        if k < 50:
            want[k] += b
    want[list(banned)] = -np.inf
    np.testing.assert_array_equal(out, want)
    allowed = np.ones(50, bool)
    allowed[40:] = False
    assert np.isneginf(apply_bias(z, allowed=allowed)[40:]).all()


@pytest.mark.parametrize(
    "presence,frequency,decay",
    [(0.4, 0.4, 0.996), (0.0, 1.0, 0.5), (1.5, 0.0, 1.0), (0.2, 0.7, 0.1)],
)
def test_penalties_match_chatrwkv_over_a_generation(presence, frequency, decay):
    """Greedy decoding with penalties, step by step against ChatRWKV's occurrence dictionary."""
    v = 23
    cfg = SamplingConfig(
        temperature=0, presence_penalty=presence, frequency_penalty=frequency, penalty_decay=decay
    )
    sampler = Sampler(cfg)
    occurrence: dict[int, float] = {}
    rng = np.random.default_rng(5)
    for _ in range(40):
        z = (rng.standard_normal(v) * 2).astype(np.float32)
        z[3] += 4  # a favourite that the penalties must eventually push down
        want_logits = o_chatrwkv_penalised(z, occurrence, presence, frequency)
        if sampler.counts is not None:
            np.testing.assert_allclose(
                apply_penalties(z, sampler.counts, presence, frequency),
                want_logits,
                rtol=1e-12,
                atol=1e-12,
            )
        token = sampler(z)
        assert token == int(np.argmax(want_logits))
        for n in occurrence:
            occurrence[n] *= decay
        occurrence[token] = occurrence.get(token, 0.0) + 1.0
    assert len(occurrence) > 1 or (presence == 0 and frequency == 0)


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    z = np.array([2.0, -2.0, 2.0, -2.0, 0.5])
    counts = np.array([1.0, 1.0, 0.0, 0.0, 0.3])
    out = apply_penalties(z, counts, repetition=2.0)
    np.testing.assert_array_equal(out, [1.0, -4.0, 2.0, -2.0, 0.25])


def test_penalties_need_counts_so_plain_sample_ignores_them():
    z = rand_logits(30, 2)
    cfg = SamplingConfig(temperature=0, presence_penalty=100.0)
    assert sample(z, cfg, np.random.default_rng(0)) == int(np.argmax(z))
    counts = np.zeros(30)
    counts[int(np.argmax(z))] = 1
    assert sample(z, cfg, np.random.default_rng(0), counts) != int(np.argmax(z))


def test_probabilities_chain_matches_oracle():
    z = rand_logits(997, 3, 2.0)
    counts = np.zeros(997)
    counts[[int(np.argmax(z)), 5, 9]] = [2.0, 1.0, 0.5]
    cfg = SamplingConfig(temperature=0.7, top_k=300, top_p=0.9, typical_p=0.95, min_p=0.02,
                         presence_penalty=0.3, frequency_penalty=0.2, logit_bias={4: 1.0}, banned={8})  # fmt: skip
    want = np.asarray(z, np.float64).copy()
    want[4] += 1.0
    want[8] = -np.inf
    want = o_chatrwkv_penalised(want, {i: c for i, c in enumerate(counts) if c > 0}, 0.3, 0.2)
    want = o_min_p(o_typical(o_top_p(o_top_k(o_softmax(want, 0.7), 300), 0.9), 0.95), 0.02)
    np.testing.assert_allclose(probabilities(z, cfg, counts), want, rtol=1e-10, atol=1e-15)


# -- drawing -----------------------------------------------------------------------------------
def test_draw_is_inverse_cdf_of_one_uniform():
    probs = o_softmax(rand_logits(500, 4, 1.0))
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    cdf = np.cumsum(probs)
    for _ in range(200):
        u = b.random()
        assert draw(probs, a) == int(np.argmax(cdf > u * cdf[-1]))


def test_draw_frequencies_follow_probabilities():
    probs = filter_top_k(o_softmax(rand_logits(10, 5, 1.0)), 6)
    rng = np.random.default_rng(0)
    n = 20000
    counts = np.bincount([draw(probs, rng) for _ in range(n)], minlength=10)
    assert counts[probs == 0].sum() == 0
    np.testing.assert_allclose(counts / n, probs, atol=4 * np.sqrt(0.25 / n))


def test_greedy_is_argmax_and_uses_no_randomness():
    z = rand_logits(1000, 6)
    rng = np.random.default_rng(1)
    before = rng.bit_generator.state
    assert sample(z, SamplingConfig(temperature=0), rng) == int(np.argmax(z))
    assert rng.bit_generator.state == before
    assert sample(z, SamplingConfig(temperature=0, banned={int(np.argmax(z))}), rng) == int(
        np.argsort(z)[-2]
    )


def test_same_seed_same_tokens_different_seed_different_tokens():
    z = rand_logits(1000, 7, 0.5)

    def run(seed: int) -> list[int]:
        s = Sampler(SamplingConfig(seed=seed, top_p=0.95))
        return [s(z) for _ in range(30)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_everything_banned_is_a_clear_error():
    with pytest.raises(RWKVError, match="banned"):
        sample(np.zeros(3), SamplingConfig(banned={0, 1, 2}), np.random.default_rng(0))
    with pytest.raises(RWKVError, match="banned"):
        sample(
            np.zeros(3), SamplingConfig(temperature=0, banned={0, 1, 2}), np.random.default_rng(0)
        )


# -- config ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field,value",
    [("temperature", -0.1), ("temperature", float("nan")), ("temperature", float("inf")), ("top_p", 0.0),
     ("top_p", 1.5), ("top_k", -1), ("top_k", 2.5), ("min_p", 1.0), ("min_p", -0.1), ("typical_p", 0.0),
     ("presence_penalty", float("inf")), ("frequency_penalty", float("nan")), ("repetition_penalty", 0.0),
     ("penalty_decay", 1.5), ("seed", -1), ("seed", 1.5), ("banned", [-1]), ("banned", ["x"]),
     ("logit_bias", {1: float("nan")}), ("logit_bias", {-3: 1.0}), ("logit_bias", 5)],
)  # fmt: skip
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**{field: value})


def test_config_normalises_and_stays_hashable():
    cfg = SamplingConfig(logit_bias={5: 1, 2: -np.inf}, banned=[3, 3, 4])
    assert cfg.logit_bias == ((2, -np.inf), (5, 1.0))
    assert cfg.banned == frozenset({3, 4})
    assert hash(cfg) == hash(SamplingConfig(logit_bias=((5, 1.0), (2, -np.inf)), banned={4, 3}))
    assert cfg.replace(top_k=3).top_k == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.top_k = 3  # type: ignore[misc]


# -- ids the tokenizer can decode --------------------------------------------------------------------
def test_valid_ids_of_the_world_vocabulary():
    mask = valid_ids(load_tokenizer("world"), 65536)
    assert mask.shape == (65536,) and mask[0] and mask[1] and mask[65529]
    assert np.flatnonzero(~mask).tolist() == [65530, 65531, 65532, 65533, 65534, 65535]


def test_sampler_never_picks_an_id_the_tokenizer_cannot_decode():
    tok = WorldTokenizer({1: b"a", 2: b"b", 5: b"c"}, vocab_size=8)
    model = SimpleNamespace(tokenizer=tok, info=SimpleNamespace(num_vocab=10))
    mask = valid_ids(tok, 10)
    assert np.flatnonzero(mask).tolist() == [0, 1, 2, 5]
    z = np.zeros(10, np.float32)
    z[[3, 4, 6, 7, 8, 9]] = 50.0  # undecodable ids are the most likely by far
    sampler = Sampler.for_model(model, SamplingConfig(seed=0, temperature=2.0))
    assert {sampler(z) for _ in range(200)} <= {0, 1, 2, 5}
    assert Sampler.for_model(model, SamplingConfig(temperature=0))(z) in (0, 1, 2, 5)
