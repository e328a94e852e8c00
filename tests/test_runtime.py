"""The serving engine: concurrent requests equal serial ones, async API, streaming, stop strings,
max_tokens, cancellation and bad input."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from toy_tokenizer import ToyTokenizer, text_of

import rwkv_webgpu as rw
from rwkv_webgpu.runtime import Completion, Engine, RequestHandle

MODELS = Path(__file__).resolve().parent / "fixtures" / "models"
GREEDY = rw.SamplingConfig(temperature=0)
N_TOKENS = 6
TIMEOUT = 120


@pytest.fixture(scope="module")
def model(vulkan_device):
    m = rw.load_model(MODELS / "v7_L2_C64_V97.pth", device=vulkan_device, token_chunk_size=32)
    m.tokenizer = ToyTokenizer(m.info.num_vocab)
    return m


@pytest.fixture(scope="module")
def prompts(model):
    rng = np.random.default_rng(7)
    return [rng.integers(1, model.info.num_vocab, int(n)).tolist() for n in rng.integers(1, 14, 16)]


@pytest.fixture(scope="module")
def serial(model, prompts):
    """Greedy text of each prompt, one request at a time without the engine."""
    return [rw.generate(model, p, max_tokens=N_TOKENS, sampling=GREEDY) for p in prompts]


@pytest.fixture(scope="module")
def engine(model):
    with Engine(model, max_batch=4) as e:
        yield e


def test_concurrent_greedy_equals_serial(model, prompts, serial):
    with Engine(model, max_batch=16) as engine:
        handles = [engine.submit(p, max_tokens=N_TOKENS, sampling=GREEDY) for p in prompts]
        done = [h.result(TIMEOUT) for h in handles]
        assert engine.stats.requests == 16
        assert engine.stats.prefill_tokens == sum(map(len, prompts))
        assert engine.stats.steps < sum(len(p) + N_TOKENS for p in prompts) / 4  # really batched
    assert [c.text for c in done] == serial
    for p, c in zip(prompts, done):
        assert isinstance(c, Completion)
        assert c.prompt_tokens == len(p) and c.completion_tokens == len(c.tokens)
        assert c.text == text_of(c.tokens)
        assert c.finish_reason == ("length" if len(c.tokens) == N_TOKENS else "eos")


@pytest.mark.parametrize("sampling", [GREEDY, rw.SamplingConfig(temperature=1.0, top_p=0.9, seed=3)])
def test_gpu_sampling_engine_equals_host_sampling(model, prompts, sampling):
    """gpu_sampling=True chooses every decoding step's tokens on the GPU (only ids read back):
    the same completions as sampling the read-back logits on the host, seeded ones included
    (one draw per token either way)."""
    runs, sampled_steps = {}, []
    run = model.runner.run

    def spy(state, plan):
        sampled_steps.append(plan.sample is not None)
        return run(state, plan)

    model.runner.run = spy
    try:
        for gpu in (False, True):
            sampled_steps.clear()
            with Engine(model, max_batch=8, gpu_sampling=gpu) as engine:
                handles = [engine.submit(p, max_tokens=N_TOKENS, sampling=sampling) for p in prompts]
                runs[gpu] = [h.result(TIMEOUT).tokens for h in handles]
            assert any(sampled_steps) == gpu
    finally:
        del model.runner.run
    assert runs[True] == runs[False]
    with Engine(model, gpu_sampling=True) as engine, pytest.raises(rw.RWKVError, match="host sampler"):
        engine.submit(prompts[0], sampling=rw.SamplingConfig(min_p=0.1))


def test_more_requests_than_slots_and_text_prompts(engine, prompts, serial):
    """16 requests through 4 slots (joining as others leave), submitted from several threads,
    half of them as text."""
    out: dict[int, Completion] = {}

    def worker(idx):
        for i in idx:
            p = text_of(prompts[i]) if i % 2 else prompts[i]
            out[i] = engine.generate(p, max_tokens=N_TOKENS, sampling=GREEDY)

    threads = [threading.Thread(target=worker, args=(range(k, 16, 4),)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert [out[i].text for i in range(16)] == serial


def test_small_step_budget_equals_serial(model, prompts, serial):
    """A step budget smaller than the number of busy slots (prefill shares steps with decodes)."""
    with Engine(model, max_batch=3, token_chunk_size=2) as engine:
        handles = [engine.submit(p, max_tokens=N_TOKENS, sampling=GREEDY) for p in prompts[:6]]
        assert [h.result(TIMEOUT).text for h in handles] == serial[:6]


def test_async_api(engine, prompts, serial):
    async def main():
        gens = [engine.agenerate(p, max_tokens=N_TOKENS, sampling=GREEDY) for p in prompts[:4]]

        async def streamed(p):
            return "".join(
                [piece async for piece in engine.astream(p, max_tokens=N_TOKENS, sampling=GREEDY)]
            )

        streams = [streamed(p) for p in prompts[4:8]]
        return await asyncio.gather(*gens, *streams)

    res = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert [c.text for c in res[:4]] == serial[:4]
    assert res[4:] == serial[4:8]


def test_stream_deltas_concatenate_to_result(engine, prompts, serial):
    h = engine.submit(prompts[0], max_tokens=N_TOKENS, sampling=GREEDY)
    assert isinstance(h, RequestHandle)
    pieces = list(h)
    assert "".join(pieces) == h.result(TIMEOUT).text == serial[0]
    assert "".join(engine.stream(prompts[1], max_tokens=N_TOKENS, sampling=GREEDY)) == serial[1]


def _stop_case(model, prompts, n=16):
    """A prompt whose greedy continuation has at least 4 distinct tokens, and that continuation."""
    for p in prompts:
        toks = []
        s = model.new_state()
        logits = model.forward(p, s)
        for _ in range(n):
            toks.append(int(np.argmax(logits)))
            logits = model.forward([toks[-1]], s)
        if 0 not in toks and len(set(toks[1:])) >= 4:
            return p, toks
    pytest.skip("no prompt with a varied greedy continuation")


def test_stop_strings(engine, model, prompts):
    p, toks = _stop_case(model, prompts)
    full = text_of(toks)
    k = next(i for i in range(1, len(toks)) if toks[i] not in toks[:i])
    stops = [
        [f"w{toks[k]} "],  # a whole token
        [f"{str(toks[k - 1])[-1]} w{toks[k]}"],  # across a token boundary
        ["never", f"w{toks[k]} "],  # several, one matches
        [full[1 : len(full) // 2]],  # long, starting inside the first token
    ]
    for stop in stops:
        cut = min(full.find(s) for s in stop if s in full)
        h = engine.submit(p, max_tokens=len(toks), sampling=GREEDY, stop=stop, stop_at_eos=False)
        pieces = list(h)
        c = h.result(TIMEOUT)
        assert c.finish_reason == "stop", stop
        assert c.text == full[:cut], stop
        assert "".join(pieces) == c.text
        for s in stop:
            assert s not in c.text
            assert all(s not in piece for piece in pieces)
    # a stop string that never occurs changes nothing
    c = engine.generate(p, max_tokens=len(toks), sampling=GREEDY, stop=["w999 "], stop_at_eos=False)
    assert (c.text, c.finish_reason) == (full, "length")


def test_max_tokens(engine, prompts):
    for n in (0, 1, 5):
        h = engine.submit(prompts[2], max_tokens=n, sampling=GREEDY, stop_at_eos=False)
        pieces = list(h)
        c = h.result(TIMEOUT)
        assert c.finish_reason == "length"
        assert c.completion_tokens == len(c.tokens) == n
        assert "".join(pieces) == c.text == text_of(c.tokens)


def test_cancel_frees_the_slot(model, prompts, serial):
    with Engine(model, max_batch=1) as engine:
        long = engine.submit(prompts[0], max_tokens=100_000, sampling=GREEDY, stop_at_eos=False)
        queued = engine.submit(prompts[1], max_tokens=100_000, sampling=GREEDY, stop_at_eos=False)
        it = iter(long)
        next(it)  # the long request is running
        queued.cancel()  # cancelled while waiting for the slot: never runs
        long.cancel()
        c = long.result(TIMEOUT)
        assert c.finish_reason == "cancelled"
        assert 1 <= c.completion_tokens < 100_000
        q = queued.result(TIMEOUT)
        assert (q.finish_reason, q.tokens) == ("cancelled", [])
        list(it)  # the stream ends
        # the only slot is free again: a later request completes, with the right output
        after = engine.submit(prompts[2], max_tokens=N_TOKENS, sampling=GREEDY)
        assert after.result(TIMEOUT).text == serial[2]
        long.cancel()  # cancelling a finished request is harmless
        assert long.result(TIMEOUT).finish_reason == "cancelled"


def test_bad_input_raises_from_submit(engine, model, prompts, serial):
    v = model.info.num_vocab
    for bad in ("", "   ", [], [v], [1, v + 5], [-1]):
        with pytest.raises(rw.TokenError):
            engine.submit(bad, max_tokens=3)
    with pytest.raises(ValueError):
        engine.submit(prompts[0], max_tokens=-1)
    # still serving, and nothing bad was queued
    requests = engine.stats.requests
    assert engine.generate(prompts[3], max_tokens=N_TOKENS, sampling=GREEDY).text == serial[3]
    assert engine.stats.requests == requests + 1


def test_engine_arguments_and_close(model, vulkan_device, prompts):
    bare = rw.load_model(MODELS / "v7_L2_C64_V97.pth", device=vulkan_device, token_chunk_size=8)
    with pytest.raises(rw.RWKVError, match="tokenizer"):
        Engine(bare)
    with pytest.raises(ValueError):
        Engine(model, max_batch=0)
    engine = Engine(model, max_batch=1)
    h = engine.submit(prompts[0], max_tokens=100_000, sampling=GREEDY, stop_at_eos=False)
    engine.close()  # cancels what is running
    assert h.result(TIMEOUT).finish_reason == "cancelled"
    with pytest.raises(rw.RWKVError, match="closed"):
        engine.submit(prompts[0])


def test_serve_config_loads_the_model_quantized(vulkan_device):
    """``ServeConfig.quant`` (Ray Serve / the HTTP server): the replica's model is quantized."""
    from rwkv_webgpu.gpu import QMatrix
    from rwkv_webgpu.serve import OpenAIServer, ServeConfig

    server = OpenAIServer(ServeConfig(adapter="vulkan", quant="att=int8,ffn=nf4"))
    layer = server.served.model.layers[0]
    assert isinstance(layer.key, QMatrix) and layer.key.quant.value == "int8" and layer.ffn_key.quant.value == "nf4"
