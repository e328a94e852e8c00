"""Decoding steps ahead (models/chain.py): the same tokens, state and random draws as a plain
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


@pytest.fixture(autouse=True, params=[1, 2, 3])
def depth(request, monkeypatch):
    """Each test with the chain kept 1 (the default), 2 and 3 steps ahead."""
    monkeypatch.setattr(chain_mod, "DEPTH", request.param)
    return request.param


def chained_loop(model, first, steps, seed, *, cancel=False):
    """The same with a DecodeChain (each next() keeps as many steps in flight as tokens are still
    to be fed, at most its depth; with ``cancel`` always its depth, and cancel() then undoes the
    steps that fed tokens the plain loop does not)."""
    state, rng = model.new_state(), np.random.default_rng(seed)
    ch = model.decode_chain(state, CFG, rng)
    seq = [first]
    ch.feed([first])
    for i in range(steps):
        seq.extend(ch.next(ahead=True if cancel else steps - 1 - i))
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


@pytest.mark.parametrize("steps", [1, 2, 4, 5, 6, 13])
def test_cancel_unfeeds_the_speculative_token(model, monkeypatch, steps):
    """cancel() after the checkpoint step itself and after 1-4 steps past it (CHECKPOINT 4),
    undoing every step in flight (as many as the depth)."""
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
    with pytest.raises(rw.StateError, match="1 slots"):
        ch.feed([1, 2])
    ch.feed([1])
    with pytest.raises(rw.StateError, match="in flight"):
        ch.feed([2])
    ch.next(ahead=False)
    with pytest.raises(rw.StateError, match="nothing to cancel"):
        ch.cancel()
    with pytest.raises(rw.TokenError):
        ch.feed([model.info.num_vocab])
    with pytest.raises(rw.ConfigError, match="presence_penalty"):
        model.decode_chain(state, rw.SamplingConfig(presence_penalty=0.5), np.random.default_rng(0))
    with pytest.raises(rw.ConfigError, match="depth must be 1 to 3"):
        model.decode_chain(state, CFG, np.random.default_rng(0), depth=4)
    with pytest.raises(rw.StateError, match="batch of 1"):
        model.decode_chain(state, CFG, np.random.default_rng(0), slots=[1])
    with pytest.raises(rw.StateError, match="distinct"):
        model.decode_chain(model.new_state(3), CFG, np.random.default_rng(0), slots=[2, 0])
    # the model still decodes normally afterwards
    assert 0 <= model.forward_sample([1], state, CFG, np.random.default_rng(0)) < model.info.num_vocab


def test_several_slots_follow_forward_sample_batch(model, monkeypatch):
    """Slots 0, 2 and 3 of a 4-slot state (slot 1 left alone), one config per slot and one
    shared generator: the tokens and state of a forward_sample_batch loop, also after cancel()."""
    monkeypatch.setattr(chain_mod, "CHECKPOINT", 3)
    cfgs = [CFG, rw.SamplingConfig(temperature=0), rw.SamplingConfig(temperature=0.8, top_p=0.5)]
    slots, first, steps = [0, 2, 3], [4, 6, 8], 7
    ref, rng = model.new_state(4), np.random.default_rng(2)
    ref_cfgs = [cfgs[0], cfgs[0], cfgs[1], cfgs[2]]  # slot 1 is never fed: its config is unused
    want, toks = [], first
    for _ in range(steps):
        out = model.forward_sample_batch(_spread(toks, slots), ref, ref_cfgs, rng)
        toks = [out[b] for b in slots]
        want.append(toks)
    for cancel in (False, True):
        state, grng = model.new_state(4), np.random.default_rng(2)
        ch = model.decode_chain(state, cfgs, grng, slots=slots)
        ch.feed(first)
        got = [ch.next(ahead=True if cancel else steps - 1 - i) for i in range(steps)]
        if cancel:
            ch.cancel()
        assert got == want
        assert_states_identical(state, ref)
        assert grng.random() == np.random.default_rng(2).random(3 * steps + 1)[-1]


def _spread(tokens, slots, batch=4):
    """One token per listed slot, nothing for the others."""
    out = [None] * batch
    for b, t in zip(slots, tokens):
        out[b] = t
    return [[] if t is None else [t] for t in out]


def test_each_chained_step_was_recorded_before_the_previous_read(model, monkeypatch):
    """In steady decoding, next(ahead=True) sends the command buffer recorded during the call
    before (so its encoding overlapped the GPU) and records exactly one for the step after; the
    checkpoint steps (CHECKPOINT 4) are recorded with their state copy and give the same tokens."""
    monkeypatch.setattr(chain_mod, "CHECKPOINT", 4)
    want, ws, _ = plain_loop(model, 3, 12, seed=5)
    state, rng = model.new_state(), np.random.default_rng(5)
    ch = model.decode_chain(state, CFG, rng)
    runner = model.runner
    encodes: list[bool] = []
    real_encode, real_submit = runner.encode, runner.submit
    sent: list = []
    monkeypatch.setattr(runner, "encode", lambda st, plan: encodes.append(plan.chained) or real_encode(st, plan))
    monkeypatch.setattr(runner, "submit", lambda st, plan, cmd: sent.append(cmd) or real_submit(st, plan, cmd))
    seq = [3]
    ch.feed([3])
    seq.extend(ch.next(ahead=True))
    for _ in range(11):
        prepared = ch.ready
        assert prepared is not None
        before = len(encodes)
        seq.extend(ch.next(ahead=True))
        assert sent[-1] is prepared[1]  # the buffer recorded in the previous call
        assert len(encodes) == before + 1  # and one recorded for the next step
    ch.cancel()
    ch.close()
    assert seq == want
    assert_states_identical(state, ws)


def test_stamp_brackets_every_recorded_step(model, monkeypatch):
    """StepRunner.stamp (diagnostics) sees each step's encoder first and last, and the tokens
    stay those of the plain loop."""
    calls = []
    encodes = []
    runner = model.runner
    original = runner.encode

    def counted(state, plan):
        encodes.append(plan)
        return original(state, plan)

    monkeypatch.setattr(runner, "encode", counted)
    monkeypatch.setattr(runner, "stamp", lambda enc, first: calls.append(first))
    got, *_ = chained_loop(model, 3, 6, seed=5)
    want, *_ = plain_loop(model, 3, 6, seed=5)
    assert got == want
    assert encodes and calls == [True, False] * len(encodes)
