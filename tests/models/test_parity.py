"""Logits of every version against the official implementation (golden fixtures, see
tests/fixtures/README.md).

Every fixture in tests/fixtures/golden/ is checked, so new shapes made with
scripts/make_fixtures.py are picked up without editing this file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rwkv_webgpu as rw

FIX = Path(__file__).resolve().parents[1] / "fixtures"
ALL = sorted(p.stem for p in (FIX / "golden").glob("v*.npz"))  # st_* are state-tuned (own test)
V7 = [n for n in ALL if n.startswith("v7_")]
BOUND = 2e-3  # max |ours - ref| / max |ref|


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def golden(name: str) -> tuple[list[int], np.ndarray]:
    g = np.load(FIX / "golden" / f"{name}.npz")
    return g["tokens"].tolist(), g["logits"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each V7 fixture also converted to web-rwkv's .st layout."""
    from rwkv_webgpu.weights.convert import convert

    out = {}
    d = tmp_path_factory.mktemp("st")
    for name in ALL:
        out[name] = d / f"{name}.st"
        convert(FIX / "models" / f"{name}.pth", out[name])
    return out


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("chunk", [128, 5])
def test_full_output_matches_official(device, name, chunk):
    tokens, ref = golden(name)
    model = rw.load_model(FIX / "models" / f"{name}.pth", device=device, token_chunk_size=chunk)
    ours = model.forward(tokens, model.new_state(), full=True)
    assert ours.shape == ref.shape
    assert rel_err(ours, ref) <= BOUND


@pytest.mark.parametrize("name", ALL)
def test_st_layout_matches_official(device, converted, name):
    tokens, ref = golden(name)
    model = rw.load_model(converted[name], device=device)
    ours = model.forward(tokens, model.new_state(), full=True)
    assert rel_err(ours, ref) <= BOUND


@pytest.mark.parametrize("name", [ALL[0], V7[0]])
def test_decode_one_token_at_a_time_and_repeat(device, name):
    """Token-by-token decode equals the prompt path, and two runs are bit-identical."""
    tokens, ref = golden(name)
    model = rw.load_model(FIX / "models" / f"{name}.pth", device=device)
    runs = []
    for _ in range(2):
        state = model.new_state()
        rows = [model.forward([t], state) for t in tokens]
        runs.append(np.stack(rows))
    assert rel_err(runs[0], ref) <= BOUND
    assert np.array_equal(runs[0], runs[1])
    last = model.forward(tokens, model.new_state())
    assert last.shape == (ref.shape[1],)
    assert rel_err(last, ref[-1]) <= BOUND


@pytest.mark.parametrize("name", [n for n in ALL if n.endswith("L2_C64_V101") or n.startswith("v6_L2")] + V7[:1])
def test_state_carries_between_calls(vulkan_device, name):
    tokens, ref = golden(name)
    model = rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device)
    state = model.new_state()
    model.forward(tokens[:7], state)
    rest = model.forward(tokens[7:], state, full=True)
    assert rel_err(rest, ref[7:]) <= BOUND
    # a clone continues identically; a reset slot forgets
    clone = state.clone()
    a = model.forward([1, 2], state)
    b = model.forward([1, 2], clone)
    assert np.array_equal(a, b)
    clone.reset()
    fresh = model.forward(tokens, clone, full=True)
    assert rel_err(fresh, ref) <= BOUND


def test_batched_slots_equal_single(vulkan_device):
    """Uneven prompts in one batch (with an empty slot) give each slot's own result."""
    name = V7[-1]
    tokens, ref = golden(name)
    model = rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device, token_chunk_size=16)
    inputs = [tokens, [], tokens[:5], tokens[3:]]
    state = model.new_state(len(inputs))
    outs = model.forward_batch(inputs, state)
    assert outs[1] is None
    for inp, out in zip(inputs, outs):
        if inp:
            single = model.forward(inp, model.new_state())
            np.testing.assert_allclose(out, single, rtol=1e-5, atol=1e-5 * np.abs(single).max())
    assert rel_err(outs[0], ref[-1]) <= BOUND


@pytest.mark.parametrize("name", ALL)
def test_official_split_run_agrees(vulkan_device, name):
    """The official state passing (fixture's split run) and ours give the same logits."""
    g = np.load(FIX / "golden" / f"{name}.npz")
    tokens, split = g["tokens"].tolist(), g["logits_split"]
    model = rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device)
    state = model.new_state()
    first = model.forward(tokens[:7], state, full=True)
    rest = model.forward(tokens[7:], state, full=True)
    assert rel_err(np.concatenate([first, rest]), split) <= BOUND


@pytest.mark.parametrize("name", ALL)
def test_detected_version(name):
    import json

    from rwkv_webgpu.weights import detect, open_checkpoint

    meta = json.loads(str(np.load(FIX / "golden" / f"{name}.npz")["meta"]))
    with open_checkpoint(FIX / "models" / f"{name}.pth") as ck:
        info = detect(ck)
    assert ("v" + info.sub_version if info.sub_version else info.version.value) == name.split("_")[0]
    assert (info.num_layer, info.num_emb, info.num_vocab) == (meta["L"], meta["C"], meta["V"])


@pytest.mark.parametrize("name", [V7[0]])
def test_encode_ahead_gives_identical_results(vulkan_device, name):
    """Recording the next step while the GPU runs (on by default on real GPUs) changes nothing."""
    tokens, ref = golden(name)
    outs = []
    for ahead in (False, True):
        model = rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device, token_chunk_size=5)
        model.runner.encode_ahead = ahead
        state = model.new_state()
        prompt = model.forward(tokens[:12], state, full=True)
        steps = [model.forward([t], state) for t in tokens[12:]]
        outs.append(np.concatenate([prompt, np.stack(steps)]))
    assert np.array_equal(outs[0], outs[1])
    assert rel_err(outs[1], ref) <= BOUND


@pytest.mark.parametrize("name", [V7[0], ALL[0]])
def test_embed_is_the_head_input(vulkan_device, name):
    """Model.embed returns ln_out(x) of the last token: the head applied to it gives the logits."""
    from rwkv_webgpu.weights import open_checkpoint

    tokens, ref = golden(name)
    model = rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device)
    hidden = model.embed(tokens)
    with open_checkpoint(FIX / "models" / f"{name}.pth") as ck:
        head = ck.load("head.weight").astype(np.float64)
    assert hidden.shape == (model.info.num_emb,)
    assert rel_err(head @ hidden, ref[-1]) <= BOUND


@pytest.mark.parametrize("name", [V7[0], [n for n in ALL if n.startswith("v6_")][0]])
def test_gpu_kernel_choice_matches_official(vulkan_device, monkeypatch, name):
    """On a software adapter the engine picks its CPU-friendly kernels; the GEMV/tiled kernels and
    encode-ahead that real GPUs get are checked here by making the adapter look discrete."""
    import dataclasses

    tokens, ref = golden(name)
    monkeypatch.setattr(vulkan_device, "info", dataclasses.replace(vulkan_device.info, adapter_type="DiscreteGPU"))
    for chunk in (128, 3):
        model = rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device, token_chunk_size=chunk)
        assert model.runner.encode_ahead
        state = model.new_state()
        ours = np.concatenate([model.forward(tokens[:20], state, full=True), model.forward(tokens[20:], state, full=True)])
        assert rel_err(ours, ref) <= BOUND


FUSED = {"v5": "wkv.decode", "v6": "wkv.decode", "v7": "v7.decode"}  # the one-token time-mix kernel's label


def decode_both_ways(device, name, monkeypatch, cls, switch):
    """Decode the fixture's tokens one by one with ``cls.switch`` on and off:
    {flag: (logits [T, V], labels recorded, labels of the dispatches that ran)}."""
    tokens, _ = golden(name)
    out = {}
    for flag in (True, False):
        monkeypatch.setattr(cls, switch, flag)
        model = rw.load_model(FIX / "models" / f"{name}.pth", device=device)
        state = model.new_state()
        g = model.runner.graph(state)[0]
        logits, ran = [], set()
        for t in tokens:
            logits.append(model.forward([t], state))
            ran |= {it.label for it in g.items if hasattr(it, "grid") and 0 not in it.grid(it.counter.value)}
        out[flag] = (np.stack(logits), {it.label for it in g.items}, ran)
    return out


@pytest.mark.parametrize("name", [n for n in ALL if n.startswith("v6")])
def test_lora_halves_inside_decoding_kernels(device, name, monkeypatch):
    """RWKV-6 decoding with its LoRA halves inside the fused kernels (`norm_lora`; the decay
    second half in the time-mix `decode`; what GPUs run, forced on and off here on every adapter) gives
    the official logits and those of the separate products."""
    from rwkv_webgpu.models.v5 import V5Model

    runs = decode_both_ways(device, name, monkeypatch, V5Model, "lora_inside_forced")
    for inside, (_, _, ran) in runs.items():
        assert any(label.endswith("att.ln1_lora") for label in ran) == inside
        assert any(label.endswith("att.decay_w2") for label in ran) != inside
    assert rel_err(runs[True][0], golden(name)[1]) <= BOUND
    assert rel_err(runs[True][0], runs[False][0]) <= 1e-4


@pytest.mark.parametrize("name", [n for n in ALL if n[:2] in FUSED])
def test_fused_decode_kernels(device, name, monkeypatch):
    """Decoding steps run the time mix as one kernel (RWKV-5/6: wkv and group norm; RWKV-7: the
    LoRA second halves, prepare, wkv and norm); logits match the official ones and the unfused
    path, which prompts keep."""
    from rwkv_webgpu.models.v5 import V5Model
    from rwkv_webgpu.models.v7 import V7Model

    runs = decode_both_ways(device, name, monkeypatch, V7Model if name.startswith("v7") else V5Model, "fuse_decode")
    for fused, (_, recorded, ran) in runs.items():
        assert any(label.endswith(FUSED[name[:2]]) for label in ran) == fused
        assert any(label.endswith(("v7.wkv", "att.wkv")) for label in recorded)  # the prompt path
    assert rel_err(runs[True][0], golden(name)[1]) <= BOUND
    assert rel_err(runs[True][0], runs[False][0]) <= 1e-4


@pytest.mark.parametrize("name", [n for n in ALL if n.startswith("v6")])
def test_mix_lora_in_prompts(device, name, monkeypatch):
    """RWKV-6 prompt steps with the five mix-LoRA second halves inside the mix kernel (`mix_lora`,
    what GPUs run; CPU adapters keep the products) give the official logits and those of the
    separate products, over chunks that split the prompt and a multi-slot batch."""
    from rwkv_webgpu.models.v6 import V6Model

    tokens, ref = golden(name)
    out = {}
    for inside in (True, False):
        monkeypatch.setattr(V6Model, "mix_lora_prompts_forced", inside)
        model = rw.load_model(FIX / "models" / f"{name}.pth", device=device, token_chunk_size=16)
        # two slots of different lengths in one step: each slot's token shift stays its own
        both = model.run([list(tokens[:5]), list(tokens[:3])], model.new_state(2), output="full")
        assert rel_err(np.asarray(both[0]), ref[:5]) <= BOUND
        assert rel_err(np.asarray(both[1]), ref[:3]) <= BOUND
        model.token_chunk_size = 7  # prompt chunks that split the prompt
        state = model.new_state()
        g = model.runner.graph(state)[0]
        out[inside] = model.forward(tokens, state, full=True)
        ran = {it.label for it in g.items if hasattr(it, "grid") and 0 not in it.grid(it.counter.value)}
        assert any(label.endswith("att.mix_lora") for label in ran) == inside
    assert rel_err(out[True], ref) <= BOUND
    assert rel_err(out[True], out[False]) <= 1e-4
