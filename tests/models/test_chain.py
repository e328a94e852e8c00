"""Decoding one step ahead (models/chain.py): the same tokens, state and random draws as a plain
loop of forward_sample, and cancel() leaves the state as if the speculative token was never fed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rwkv_webgpu as rw
from rwkv_webgpu.models import chain as chain_mod

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "models"
CFG = rw.SamplingConfig(temperature=1.1, top_p=0.8, top_k=30)


@pytest.fixture(scope="module", params=["v7_L2_C64_V97", "v6_L2_C64_V67"])
def model(request, device):
    return rw.load_model(FIX / f"{request.param}.pth", device=device)


def plain_loop(model, first, steps, seed):
    """forward_sample one token at a time: tokens, state, generator."""
    state, rng = model.new_state(), np.random.default_rng(seed)
    seq = [first]
    for _ in range(steps):
        seq.append(model.forward_sample([seq[-1]], state, CFG, rng))
    return seq, state, rng


def chained_loop(model, first, steps, seed, *, cancel=False):
    """The same with a DecodeChain (each next() submits the following step first, except the
    last unless ``cancel``, which then undoes that speculative step)."""
    state, rng = model.new_state(), np.random.default_rng(seed)
    ch = model.decode_chain(state, CFG, rng)
    seq = [first]
    ch.feed(first)
    for i in range(steps):
        seq.append(ch.next(ahead=i + 1 < steps or cancel))
    if cancel:
        ch.cancel()
    ch.close()
    return seq, state, rng


def assert_states_identical(a, b):
    x, y = a.to_numpy(), b.to_numpy()
    for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("steps", [1, 5, 21])
def test_chain_matches_plain_loop(model, monkeypatch, steps):
    monkeypatch.setattr(chain_mod, "CHECKPOINT", 4)
    want, ws, wr = plain_loop(model, 3, steps, seed=11)
    got, gs, gr = chained_loop(model, 3, steps, seed=11)
    assert got == want
    assert_states_identical(gs, ws)  # the gathered rows are the host's rows, bit for bit
    assert gr.random() == wr.random()  # one draw per step, in order


@pytest.mark.parametrize("steps", [1, 4, 5, 6, 13])
def test_cancel_unfeeds_the_speculative_token(model, monkeypatch, steps):
    """cancel() after the checkpoint step itself and after 1-4 steps past it (CHECKPOINT 4)."""
    monkeypatch.setattr(chain_mod, "CHECKPOINT", 4)
    got, gs, gr = chained_loop(model, 5, steps, seed=3, cancel=True)
    want, ws, wr = plain_loop(model, 5, steps, seed=3)  # feeds all but the last token it reads
    assert got == want
    assert_states_identical(gs, ws)
    assert gr.random() == wr.random()  # the speculative step's draw was given back


def test_chain_misuse_is_refused(model):
    state = model.new_state()
    ch = model.decode_chain(state, CFG, np.random.default_rng(0))
    with pytest.raises(rw.StateError, match="feed"):
        ch.next(ahead=True)
    ch.feed(1)
    with pytest.raises(rw.StateError, match="in flight"):
        ch.feed(2)
    ch.next(ahead=False)
    with pytest.raises(rw.StateError, match="nothing to cancel"):
        ch.cancel()
    with pytest.raises(rw.TokenError):
        ch.feed(model.info.num_vocab)
    with pytest.raises(rw.ConfigError, match="presence_penalty"):
        model.decode_chain(state, rw.SamplingConfig(presence_penalty=0.5), np.random.default_rng(0))
    with pytest.raises(rw.StateError, match="slot"):
        model.decode_chain(state, CFG, np.random.default_rng(0), slot=1)
    # the model still decodes normally afterwards
    assert 0 <= model.forward_sample([1], state, CFG, np.random.default_rng(0)) < model.info.num_vocab
