"""generate / generate_stream: text integrity (UTF-8, stop strings), finish reasons, seeds, prefix cache.

The text tests use a scripted stand-in model (its logits pick a given token sequence), so they need
no GPU; the rest run a fixture model on the software Vulkan adapter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rwkv_webgpu as rw
from rwkv_webgpu.cache import PrefixCache
from rwkv_webgpu.generate import GenerationResult, generate, generate_stream
from rwkv_webgpu.sampling import Sampler, SamplingConfig
from rwkv_webgpu.tokenizer import WorldTokenizer

FIX = Path(__file__).resolve().parent / "fixtures" / "models"
V7 = FIX / "v7_L2_C64_V97.pth"
DEMO = Path(rw.__file__).resolve().parent / "demo"
GREEDY = SamplingConfig(temperature=0)

# Byte pieces that cut multi-byte characters: é = c3 a9, 😀 = f0 9f 98 80, 中 = e4 b8 ad, 文 = e6 96 87.
PIECES = [b"a", b"b", b"c", b" ", b"\n", b"h", b"i", b"END", b"E", b"N", b"D", b"\xc3", b"\xa9",
          b"\xf0\x9f", b"\x98", b"\x80", b"\xe4", b"\xb8\xad", b"\xe6\x96", b"\x87", b"\xf0", b"\x9f\x98\x80"]  # fmt: skip


def toy_tokenizer(vocab_size: int = 40) -> WorldTokenizer:
    """Token i + 1 spells PIECES[i]; id 0 ends the text; ids past the pieces are unused."""
    return WorldTokenizer({i + 1: p for i, p in enumerate(PIECES)}, vocab_size=vocab_size)


def ids_of(*pieces: bytes) -> list[int]:
    return [PIECES.index(p) + 1 for p in pieces]


class FakeState:
    def __init__(self) -> None:
        self.fed: list[int] = []
        self.calls = 0


class ScriptedModel:
    """Greedy decoding of this "model" gives ``script``; with ``script=None`` logits are random."""

    def __init__(self, script: list[int] | None, vocab: int = 40, seed: int = 0):
        self.tokenizer = toy_tokenizer(vocab)
        self.info = type("Info", (), {"num_vocab": vocab})()
        self.script = script
        self.seed = seed

    def new_state(self) -> FakeState:
        return FakeState()

    def forward(self, ids, state: FakeState) -> np.ndarray:
        state.fed += list(ids)
        state.calls += 1
        if self.script is None:
            rng = np.random.default_rng([self.seed, state.calls])  # the same logits on every run
            return rng.standard_normal(self.info.num_vocab).astype(np.float32) * 2
        logits = np.zeros(self.info.num_vocab, np.float32)
        step = state.calls - 1
        logits[self.script[step] if step < len(self.script) else 0] = 10.0
        return logits


def run_both(model, prompt, **kw) -> tuple[list[str], GenerationResult]:
    """Streamed pieces and the non-streaming result of the same generation."""
    stream = generate_stream(model, prompt, **kw)
    pieces = list(stream)
    result = generate(model, prompt, return_result=True, **kw)
    assert "".join(pieces) == result.text == stream.result.text
    return pieces, result


# -- text integrity (no GPU) ------------------------------------------------------------------------
def test_emoji_and_cjk_survive_streaming_intact():
    script = ids_of(b"h", b"\xc3", b"\xa9", b" ", b"\xf0\x9f", b"\x98", b"\x80", b" ", b"\xe4", b"\xb8\xad",
                    b"\xe6\x96", b"\x87", b"\xf0", b"\x9f\x98\x80", b"a")  # fmt: skip
    model = ScriptedModel(script)
    pieces, result = run_both(model, [1], sampling=GREEDY, max_tokens=len(script))
    assert result.text == "hé 😀 中文😀a"
    assert all("\ufffd" not in p and p for p in pieces)
    # no piece ends inside a character: each one encodes back to whole UTF-8 sequences
    assert b"".join(p.encode() for p in pieces) == "hé 😀 中文😀a".encode()
    assert len(pieces) < len(script)  # the split characters came out once complete
    assert result.finish_reason == "length" and result.completion_tokens == len(script)


def test_stop_string_is_not_emitted_and_partial_matches_are_held_back():
    # "hiEND" split as h, i, E, N, D: the stop string spans three tokens
    script = ids_of(b"a", b"b", b"E", b"N", b"c", b"h", b"i", b"E", b"N", b"D", b"a", b"a")
    model = ScriptedModel(script)
    pieces, result = run_both(model, [1], sampling=GREEDY, max_tokens=20, stop=["END"])
    assert result.text == "abENchi"
    assert result.finish_reason == "stop"
    # "EN" was held back until "c" showed it was not the stop string; the final "EN" never came out
    assert pieces == ["a", "b", "ENc", "h", "i"]
    assert result.tokens == script[:10]  # the tokens up to the one completing the stop string


def test_stop_string_inside_one_token_and_several_stops():
    script = ids_of(b"a", b"END", b"b")
    for stop in (["END"], ["N", "zz"], ["zz", "ND"]):
        _, result = run_both(ScriptedModel(script), [1], sampling=GREEDY, max_tokens=5, stop=stop)
        assert result.finish_reason == "stop"
        first = stop[0] if stop[0] != "zz" else stop[1]
        assert result.text == {"END": "a", "N": "aE", "ND": "aE"}[first]


def test_stop_strings_never_appear_in_random_generations():
    """Random text from random logits, many seeds: output == text before the first stop, streamed or not."""
    stops = ["ab", "\n\n", "😀", "hi"]
    found = 0
    for seed in range(40):
        cfg = SamplingConfig(seed=seed, temperature=1.5)
        model = ScriptedModel(None, seed=seed)
        pieces, result = run_both(
            model, [1], sampling=cfg, max_tokens=60, stop=stops, stop_at_eos=False
        )
        full = model.tokenizer.decode(result.tokens)
        assert not any(s in result.text for s in stops)
        if result.finish_reason == "stop":
            found += 1
            cut = min(i for i in (full.find(s) for s in stops) if i >= 0)
            assert result.text == full[:cut]
        for p in pieces:
            assert not any(s in p for s in stops)
    assert found > 10  # the stop strings were really exercised


def test_finish_reasons_and_counts():
    model = ScriptedModel(ids_of(b"a", b"b") + [0, 3])
    r = generate(model, [1, 2, 3], sampling=GREEDY, max_tokens=10, return_result=True)
    assert (r.text, r.finish_reason, r.prompt_tokens, r.completion_tokens) == ("ab", "eos", 3, 2)
    r = generate(
        model, [1, 2, 3], sampling=GREEDY, max_tokens=10, stop_at_eos=False, return_result=True
    )
    assert r.finish_reason == "length" and r.completion_tokens == 10 and r.tokens[2] == 0
    r = generate(model, [1], sampling=GREEDY, max_tokens=1, return_result=True)
    assert (r.text, r.finish_reason, r.tokens) == ("a", "length", ids_of(b"a"))
    r = generate(model, [1], sampling=GREEDY, max_tokens=0, return_result=True)
    assert (r.text, r.finish_reason, r.completion_tokens) == ("", "length", 0)


def test_state_holds_prompt_and_every_generated_token():
    model = ScriptedModel(ids_of(b"a", b"b", b"c"))
    state = model.new_state()
    r = generate(model, [5, 6], sampling=GREEDY, max_tokens=3, state=state, return_result=True)
    assert state.fed == [5, 6, *r.tokens]


def test_text_prompt_and_bad_arguments():
    model = ScriptedModel(ids_of(b"a"))
    assert generate(model, "hi", sampling=GREEDY, max_tokens=1) == "a"
    with pytest.raises(rw.TokenError):
        generate(model, [], max_tokens=1)
    with pytest.raises(rw.TokenError):
        generate(model, "", max_tokens=1)
    with pytest.raises(ValueError, match="max_tokens"):
        generate(model, [1], max_tokens=-1)
    with pytest.raises(ValueError, match="not both"):
        generate(model, [1], sampling=GREEDY, sampler=Sampler(GREEDY))


def test_never_samples_ids_the_tokenizer_cannot_decode():
    # random logits over 40 ids, only 23 of them decodable: an unmasked sampler would crash the decoder
    for seed in range(5):
        r = generate(ScriptedModel(None, seed=seed), [1], sampling=SamplingConfig(seed=seed, temperature=3.0),
                     max_tokens=40, stop_at_eos=False, return_result=True)  # fmt: skip
        assert max(r.tokens) <= len(PIECES)


# -- on the GPU --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(vulkan_device):
    m = rw.load_model(V7, device=vulkan_device)
    m.tokenizer = WorldTokenizer(
        {i + 1: bytes([c]) for i, c in enumerate(b"abcdefghijklmnopqrstuvwxyz .,")}, vocab_size=97
    )
    return m


def test_same_seed_same_text_different_seed_different_text(model):
    def run(seed: int) -> str:
        return generate(
            model, "hello world", sampling=SamplingConfig(seed=seed, temperature=1.2), max_tokens=10
        )

    a = run(11)
    assert a == run(11)
    assert a != run(12)
    # only decodable ids (29 of 97) were chosen
    assert set(a) <= set("abcdefghijklmnopqrstuvwxyz .,")


def test_greedy_equals_argmax_loop_and_state_continues(model):
    prompt = model.tokenizer.encode("the cat")
    state = model.new_state()
    r = generate(
        model,
        prompt,
        sampling=GREEDY,
        max_tokens=5,
        stop_at_eos=False,
        state=state,
        return_result=True,
    )
    ref = model.new_state()
    logits = model.forward(prompt, ref)
    mask = np.zeros(97, bool)
    mask[:30] = True
    want = []
    for _ in range(5):
        want.append(int(np.argmax(np.where(mask, logits, -np.inf))))
        logits = model.forward([want[-1]], ref)
    assert r.tokens == want
    a, b = state.to_numpy(), ref.to_numpy()  # the state went on through every generated token
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5)


def test_prefix_cache_restores_instead_of_processing(model):
    cache = PrefixCache(model)
    cfg = SamplingConfig(seed=3)
    prompt = "a long prompt about cats"
    plain = generate(model, prompt, sampling=cfg, max_tokens=6, return_result=True)
    first = generate(model, prompt, sampling=cfg, max_tokens=6, cache=cache, return_result=True)
    # tokens per submitted step, whichever loop fed them (GPU sampling one step ahead or not)
    calls: dict[str, list[int]] = {"again": [], "longer": []}
    submit = model.runner.submit
    try:
        model.runner.submit = lambda state, plan, cmd: calls["again"].append(len(plan.tokens)) or submit(state, plan, cmd)
        again = generate(model, prompt, sampling=cfg, max_tokens=6, cache=cache, return_result=True)
        model.runner.submit = lambda state, plan, cmd: calls["longer"].append(len(plan.tokens)) or submit(state, plan, cmd)
        longer = generate(
            model, prompt + " and dogs", sampling=cfg, max_tokens=1, cache=cache, return_result=True
        )
    finally:
        del model.runner.submit
    n = len(model.tokenizer.encode(prompt))
    assert (first.cached_tokens, again.cached_tokens, longer.cached_tokens) == (0, n, n)
    assert plain.tokens == first.tokens == again.tokens
    # no prompt token was processed again: one generated token per step (an end of text taken
    # back by the GPU loop feeds the tokens since its checkpoint again, one per step too)
    assert calls["again"] and set(calls["again"]) == {1}
    assert calls["longer"][0] == len(" and dogs")  # only the new part of the longer prompt


def test_demo_model_if_present():
    if not (DEMO / "rwkv7-demo.pth").is_file() or not (DEMO / "tokenizer.json").is_file():
        pytest.skip("the demo model is not built in this checkout")
    from rwkv_webgpu.gpu import get_device

    m = rw.load_model(
        DEMO / "rwkv7-demo.pth", tokenizer=DEMO / "tokenizer.json", device=get_device("vulkan")
    )
    cfg = SamplingConfig(seed=1, top_p=0.5)
    a = generate(m, "The Python interpreter", sampling=cfg, max_tokens=12, return_result=True)
    assert a.text and a.text == m.tokenizer.decode(a.tokens)  # streamed pieces == whole decode
    assert a.text == generate(m, "The Python interpreter", sampling=cfg, max_tokens=12)


def test_example_runs(vulkan_device):
    """examples/generate.py runs on the demo model, or explains how to get it."""
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    res = subprocess.run([sys.executable, str(root / "examples" / "generate.py"), "--adapter", "vulkan",
                          "--max-tokens", "8"], check=False, capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "demo model is not in this checkout" in res.stdout or "-- chat" in res.stdout


def test_closing_a_stream_early():
    model = ScriptedModel(ids_of(b"a", b"b", b"c", b"h"))
    state = model.new_state()
    stream = generate_stream(model, [1], sampling=GREEDY, max_tokens=4, state=state)
    assert next(stream) == "a"
    stream.close()
    assert list(stream) == [] and not stream.done and stream.tokens == ids_of(b"a")
    assert state.fed == [1, *stream.tokens]
    with pytest.raises(rw.RWKVError, match="closed"):
        _ = stream.result


def _state_equal(a, b):
    x, y = a.to_numpy(), b.to_numpy()
    for k in x:
        np.testing.assert_allclose(x[k], y[k], atol=1e-5)


@pytest.mark.parametrize("cfg", [GREEDY, SamplingConfig(temperature=1.1, top_p=0.8, seed=5),
                                 SamplingConfig(temperature=0.9, top_k=6, seed=9)])  # fmt: skip
def test_gpu_sampling_gives_the_host_samplers_tokens_and_state(model, cfg):
    """Tokens chosen on the GPU (only ids read back) are the host sampler's for the same seed
    (same rule, one uniform draw each), only decodable ids, and the state ends the same."""
    runs = {}
    for gpu in (True, False):
        state = model.new_state()
        r = generate(model, "the cat", sampling=cfg, max_tokens=12, stop_at_eos=False, state=state,
                     gpu_sampling=gpu, return_result=True)  # fmt: skip
        runs[gpu] = (r, state)
    (g, gs), (h, hs) = runs[True], runs[False]
    assert g.tokens == h.tokens and len(g.tokens) == 12
    assert all(0 <= t <= 29 for t in g.tokens)  # ids the tokenizer decodes (0 ends text)
    _state_equal(gs, hs)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_gpu_sampling_stop_string_leaves_the_host_paths_state(model, monkeypatch, depth):
    """A stop string met while the GPU decodes steps ahead: the steps fed past it are undone, so
    the tokens and the state are those of host sampling (which feeds each token it keeps)."""
    from rwkv_webgpu.models import chain as chain_mod

    monkeypatch.setattr(chain_mod, "DEPTH", depth)
    cfg = SamplingConfig(temperature=1.1, top_p=0.8, seed=5)
    full = generate(model, "the cat", sampling=cfg, max_tokens=12, stop_at_eos=False, return_result=True)
    stop = full.text[len(full.text) // 2 :][:1]  # a character from the middle of the text
    assert stop
    runs = {}
    for gpu in (True, False):
        state = model.new_state()
        r = generate(model, "the cat", sampling=cfg, max_tokens=12, stop_at_eos=False, state=state, stop=[stop],
                     gpu_sampling=gpu, return_result=True)  # fmt: skip
        runs[gpu] = (r, state)
    (g, gs), (h, hs) = runs[True], runs[False]
    assert g.finish_reason == h.finish_reason == "stop"
    assert g.tokens == h.tokens and len(g.tokens) < 12
    _state_equal(gs, hs)


def test_gpu_sampling_stops_at_eos_without_feeding_it(model):
    class FirstThenMask(Sampler):
        """The host picks 5 from the prompt; afterwards only id 0 (end of text) may be chosen."""

        def __call__(self, logits):
            self.accept(5, logits.shape[-1])
            return 5

    only_eos = np.zeros(97, bool)
    only_eos[0] = True
    state = model.new_state()
    stream = generate_stream(model, "the cat", sampler=FirstThenMask(SamplingConfig(seed=1), only_eos),
                             max_tokens=8, state=state, gpu_sampling=True)  # fmt: skip
    "".join(stream)
    assert stream.gpu_sampling and stream.result.tokens == [5] and stream.result.finish_reason == "eos"
    ref = model.new_state()
    model.forward(model.tokenizer.encode("the cat") + [5], ref)
    _state_equal(state, ref)


def test_gpu_sampling_without_room_for_the_embedding_decodes_step_by_step(model, monkeypatch):
    """An adapter that cannot bind the embedding table: generate falls back to one step at a
    time (same tokens and state), and decode_chain says why."""
    cfg = SamplingConfig(temperature=1.1, top_p=0.8, seed=5)
    want_state = model.new_state()
    want = generate(model, "the cat", sampling=cfg, max_tokens=6, stop_at_eos=False, state=want_state,
                    gpu_sampling=True, return_result=True)  # fmt: skip

    def no_room(*a, **kw):
        raise rw.GPUMemoryError("embedding table [97, 64] needs 5 buffer bindings")

    monkeypatch.setattr(model, "_emb_table", None)
    monkeypatch.setattr("rwkv_webgpu.models.base.upload_table", no_room)
    with pytest.raises(rw.GPUMemoryError, match="bindings"):
        model.decode_chain(model.new_state(), cfg, np.random.default_rng(0))
    state = model.new_state()
    got = generate(model, "the cat", sampling=cfg, max_tokens=6, stop_at_eos=False, state=state,
                   gpu_sampling=True, return_result=True)  # fmt: skip
    assert got.tokens == want.tokens
    _state_equal(state, want_state)


def test_gpu_sampling_default_and_refusals(model, monkeypatch):
    import dataclasses

    info = model.device.info
    monkeypatch.setattr(model.device, "info", dataclasses.replace(info, adapter_type="CPU"))
    assert not generate_stream(model, "a", max_tokens=1).gpu_sampling  # CPU adapter: numpy is faster
    monkeypatch.setattr(model.device, "info", dataclasses.replace(info, adapter_type="DiscreteGPU"))
    assert generate_stream(model, "a", max_tokens=1).gpu_sampling
    assert not generate_stream(model, "a", max_tokens=1, sampling=SamplingConfig(presence_penalty=0.5)).gpu_sampling
    assert not generate_stream(model, "a", max_tokens=1, gpu_sampling=False).gpu_sampling
    with pytest.raises(rw.ConfigError, match="presence_penalty"):
        generate_stream(model, "a", sampling=SamplingConfig(presence_penalty=0.5), gpu_sampling=True)

    class OwnChoice(Sampler):
        def __call__(self, logits):
            return 3

    def plugin_sampler(logits):
        return 1

    # a sampler with its own rule (a subclass, a plugin's callable) keeps choosing on the host
    assert not generate_stream(model, "a", max_tokens=1, sampler=OwnChoice()).gpu_sampling
    assert generate_stream(model, "ab", max_tokens=3, sampler=OwnChoice()).result.tokens == [3, 3, 3]
    assert not generate_stream(model, "a", max_tokens=1, sampler=plugin_sampler).gpu_sampling
    with pytest.raises(rw.ConfigError, match="plugin_sampler|function"):
        generate_stream(model, "a", sampler=plugin_sampler, gpu_sampling=True)
    with pytest.raises(rw.ConfigError, match="allowed"):
        model.forward_sample([1], model.new_state(), GREEDY, np.random.default_rng(0), allowed=np.ones(3, bool))
