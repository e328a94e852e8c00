"""Batched inference: ``Model.forward_batch`` and ``Model.run`` against one-by-one ``forward``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rwkv_webgpu as rw
from rwkv_webgpu.models.step import share_budget

MODELS = Path(__file__).resolve().parent / "fixtures" / "models"
CHUNK = 8
RTOL = 1e-3  # max |batched - single| / max |single|


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def prompt(n: int, seed: int, vocab: int) -> list[int]:
    return np.random.default_rng(seed).integers(1, vocab, n).tolist()


@pytest.fixture(scope="module", params=["v7_L2_C64_V97", "v6_L2_C64_V67"])
def model(request, vulkan_device):
    return rw.load_model(
        MODELS / f"{request.param}.pth", device=vulkan_device, token_chunk_size=CHUNK
    )


@pytest.fixture(scope="module")
def v7(vulkan_device):
    return rw.load_model(MODELS / "v7_L2_C64_V97.pth", device=vulkan_device, token_chunk_size=CHUNK)


def single(model, tokens, full=False):
    return model.forward(tokens, model.new_state(), full=full)


def test_forward_batch_uneven_prompts_match_single(model):
    v = model.info.num_vocab
    inputs = [prompt(13, 1, v), [], prompt(3, 2, v), prompt(1, 3, v), prompt(9, 4, v)]
    ref = [single(model, p, full=True) if p else None for p in inputs]
    state = model.new_state(len(inputs))
    before_empty = state.get_slot(1)
    outs = model.forward_batch(inputs, state)
    assert outs[1] is None
    for r, out in zip(ref, outs):
        if r is not None:
            assert out.shape == (v,)
            assert rel(out, r[-1]) <= RTOL
    # the empty slot was skipped: its state is untouched
    after_empty = state.get_slot(1)
    assert all(np.array_equal(before_empty[k], after_empty[k]) for k in before_empty)
    # full=True: every row of every slot (an empty slot is tested below)
    busy = [p for p in inputs if p]
    full = model.forward_batch(busy, model.new_state(len(busy)), full=True)
    for inp, r, out in zip(busy, [r for r in ref if r is not None], full):
        assert out.shape == (len(inp), v)
        assert rel(out, r) <= RTOL


@pytest.mark.parametrize("slots", [3, 17])  # below and above LORA_INSIDE_UNTIL
@pytest.mark.parametrize("name", ["v7_L2_C64_V97", "v6_L2_C64_V67"])
def test_batched_decoding_matches_single(vulkan_device, name, slots, monkeypatch):
    """One token a slot for several steps (the fused decoding kernels; RWKV-6 computes its LoRA
    halves inside them only below LORA_INSIDE_UNTIL tokens), each slot as a single state would."""
    from rwkv_webgpu.models.v5 import LORA_INSIDE_UNTIL, V5Model

    assert 3 < LORA_INSIDE_UNTIL < 17
    monkeypatch.setattr(V5Model, "lora_inside_forced", True)  # as on GPUs
    model = rw.load_model(MODELS / f"{name}.pth", device=vulkan_device, token_chunk_size=32)  # 17 tokens in one step
    v = model.info.num_vocab
    seqs = [prompt(4, 10 + b, v) for b in range(slots)]
    state = model.new_state(slots)
    got = [model.forward_batch([[s[t]] for s in seqs], state) for t in range(4)]
    for b in (0, slots // 2, slots - 1):
        st = model.new_state()
        for t in range(4):
            assert rel(got[t][b], model.forward([seqs[b][t]], st)) <= RTOL


def test_forward_batch_full_with_empty_slot(v7):
    v = v7.info.num_vocab
    inputs = [prompt(5, 1, v), []]
    full = v7.forward_batch(inputs, v7.new_state(2), full=True)
    assert full[1] is None
    assert rel(full[0], single(v7, inputs[0], full=True)) <= RTOL


def test_batched_state_continues_like_single(v7):
    """After a batched prefill, each slot decodes exactly as a single-slot state would."""
    v = v7.info.num_vocab
    inputs = [prompt(13, 5, v), prompt(2, 6, v), prompt(9, 7, v)]
    state = v7.new_state(3)
    v7.forward_batch(inputs, state)
    nxt = [[4, 5], [6], [7, 8, 9]]
    outs = v7.forward_batch(nxt, state)
    for inp, more, out in zip(inputs, nxt, outs):
        s = v7.new_state()
        v7.forward(inp, s)
        assert rel(out, v7.forward(more, s)) <= RTOL
    # forward(slot=b) on a batched state advances that slot only
    s = v7.new_state(3)
    v7.forward_batch(inputs, s)
    ref = s.get_slot(0)
    one = v7.forward([6], s, slot=1)
    assert rel(one, outs[1]) <= RTOL
    got = s.get_slot(0)
    assert all(np.array_equal(ref[k], got[k]) for k in ref)


@pytest.mark.parametrize(
    "lens, budget",
    [
        ([20, 0, 3, 7], 8),
        ([5, 5, 5], 8),
        ([1, 30, 30], 8),
        ([2, 0, 1], 8),
        ([9, 9, 9, 9, 9], 3),
        ([40], 8),
    ],
)
def test_share_budget_is_fair(lens, budget):
    take = share_budget(lens, budget)
    assert sum(take) == min(budget, sum(lens))
    assert all(0 <= t <= n for t, n in zip(take, lens))
    unfinished = [t for t, n in zip(take, lens) if n and t < n]
    if unfinished:
        assert max(unfinished) - min(unfinished) <= 1
        assert all(t <= max(unfinished) for t in take)


def test_run_consumes_budget_and_returns_finished_slots(v7):
    v = v7.info.num_vocab
    prompts = [prompt(11, 8, v), [], prompt(3, 9, v), prompt(6, 10, v)]
    queues = [list(p) for p in prompts]
    state = v7.new_state(len(queues))
    final: list[np.ndarray | None] = [None] * len(queues)
    calls = 0
    while any(queues):
        lens = [len(q) for q in queues]
        take = share_budget(lens, CHUNK)
        res = v7.run(queues, state)
        calls += 1
        for b, (n0, t) in enumerate(zip(lens, take)):
            assert len(queues[b]) == n0 - t  # consumed tokens are removed from the front
            assert queues[b] == prompts[b][len(prompts[b]) - len(queues[b]) :]
            finished = t > 0 and t == n0
            assert (res[b] is not None) == finished
            if finished:
                assert res[b].shape == (v,)
                final[b] = res[b]
        assert sum(n0 - len(q) for n0, q in zip(lens, queues)) == min(CHUNK, sum(lens))
    assert calls == 3  # 20 tokens, 8 per call
    assert final[1] is None
    for p, out in zip(prompts, final):
        if p:
            assert rel(out, single(v7, p)) <= RTOL


def test_run_full_returns_rows_consumed(v7):
    v = v7.info.num_vocab
    prompts = [prompt(10, 11, v), [], prompt(4, 12, v)]
    queues = [list(p) for p in prompts]
    state = v7.new_state(3)
    rows: list[list[np.ndarray]] = [[], [], []]
    while any(queues):
        lens = [len(q) for q in queues]
        res = v7.run(queues, state, output="full", token_chunk_size=5)
        for b, n0 in enumerate(lens):
            t = n0 - len(queues[b])
            assert t <= 5
            if t:
                assert res[b].shape == (t, v)
                rows[b].append(res[b])
            else:
                assert res[b] is None
    assert rows[1] == []
    for p, r in zip(prompts, rows):
        if p:
            assert rel(np.concatenate(r), single(v7, p, full=True)) <= RTOL


def test_run_with_nothing_to_do(v7):
    state = v7.new_state(2)
    before = state.to_numpy()
    assert v7.run([[], []], state) == [None, None]
    after = state.to_numpy()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_run_rejects_bad_arguments(v7):
    state = v7.new_state(2)
    with pytest.raises(ValueError, match="token_chunk_size"):
        v7.run([[1], [2]], state, token_chunk_size=CHUNK + 1)
    with pytest.raises(ValueError, match="token_chunk_size"):
        v7.run([[1], [2]], state, token_chunk_size=0)
    with pytest.raises(ValueError, match="output"):
        v7.run([[1], [2]], state, output="all")
    with pytest.raises(rw.ConfigError, match="token_chunk_size"):
        rw.load_model(MODELS / "v7_L2_C64_V97.pth", device=v7.device, token_chunk_size=0)
    with pytest.raises(rw.StateError):
        v7.run([[1]], state)
    with pytest.raises(rw.StateError):
        v7.run([[1], [2], [3]], state)
    with pytest.raises(rw.StateError):
        v7.forward_batch([[1]], state)
    with pytest.raises(rw.TokenError):
        v7.run([[1], [v7.info.num_vocab]], state)
    # nothing was consumed by the refused calls; the model still works
    q = [[1, 2], [3]]
    out = v7.run(q, state)
    assert q == [[], []] and all(o is not None for o in out)


def test_full_logits_in_steps_the_binding_holds(vulkan_device, monkeypatch):
    """Where one buffer binding holds fewer rows of logits than a prompt chunk (large vocabulary,
    long chunks), full outputs come in steps of those rows: the same logits, no oversized buffer."""
    import dataclasses

    toks = prompt(23, 3, 97)
    ref = rw.load_model(MODELS / "v7_L2_C64_V97.pth", device=vulkan_device, token_chunk_size=16)
    want = ref.forward(toks, ref.new_state(), full=True)
    small = dataclasses.replace(vulkan_device.info, max_binding_size=5 * 4 * 97)  # 5 rows of V=97
    monkeypatch.setattr(vulkan_device, "info", small)
    model = rw.load_model(MODELS / "v7_L2_C64_V97.pth", device=vulkan_device, token_chunk_size=16)
    assert model.full_rows() == 5
    state = model.new_state()
    got = model.forward(toks, state, full=True)
    assert model.runner.graph(state)[1].logits.max_rows == 5  # the buffer holds 5 rows
    assert got.shape == (23, 97)
    assert rel(got, want) < RTOL
    batch = model.forward_batch([toks, toks[:7]], model.new_state(2), full=True)
    assert rel(batch[0], want) < RTOL and rel(batch[1], want[:7]) < RTOL
    # prompts read back only their last logits: their chunks keep the full length
    assert rel(model.forward(toks, model.new_state()), want[-1]) < RTOL
