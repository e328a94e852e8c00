"""Quantized models against the official fp32 logits, and what quantization saves."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import rwkv_webgpu as rw
from rwkv_webgpu.gpu import Matrix, QMatrix

FIX = Path(__file__).resolve().parents[1] / "fixtures"
ALL = sorted(p.stem for p in (FIX / "golden").glob("v*.npz"))


def rel_err(model, name):
    g = np.load(FIX / "golden" / f"{name}.npz")
    out = model.forward(g["tokens"].tolist(), model.new_state(), full=True)
    return float(np.abs(out - g["logits"]).max() / np.abs(g["logits"]).max())


LARGE = ("receptance", "key", "value", "output", "gate", "ffn_key", "ffn_value", "ffn_receptance")


def matrices(model, names=None):
    for layer in model.layers:
        for attr, value in vars(layer).items():
            if isinstance(value, (Matrix, QMatrix)) and (names is None or attr in names):
                yield value


@pytest.mark.parametrize("name", ALL)
def test_int8_within_bound(vulkan_device, name):
    model = rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device, quant="int8")
    assert any(isinstance(m, QMatrix) for m in matrices(model))
    assert rel_err(model, name) <= 2e-2


@pytest.mark.parametrize("quant", ["nf4", "sf4"])
@pytest.mark.parametrize("name", [n for n in ALL if n.startswith(("v4_L2", "v6_L2", "v7_L1"))])
def test_four_bit_models_stay_close(vulkan_device, name, quant):
    # measured 0.06-0.44 across the fixtures (docs/performance.md); this guards against breakage
    model = rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device, quant=quant)
    assert rel_err(model, name) <= 0.2


MIX = {"att": "int8", "ffn": "nf4"}


@pytest.mark.parametrize("name", ALL)
def test_int8_attention_with_four_bit_ffn_within_the_nf4_bound(vulkan_device, name):
    # measured 0.035-0.148 across the fixtures (pure nf4: 0.06-0.44; docs/performance.md)
    model = rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device, quant=MIX)
    for layer in model.layers:
        assert layer.key.quant.value == "int8" and layer.ffn_key.quant.value == "nf4"
    assert rel_err(model, name) <= 0.2


@pytest.mark.parametrize("gpu_paths", [False, True])
@pytest.mark.parametrize("version", ["v6", "v7"])
def test_a_matrix_entry_wins_over_its_block(vulkan_device, tmp_path, version, gpu_paths, monkeypatch):
    import dataclasses

    if gpu_paths:  # the kernels discrete GPUs run (product groups, f16 products joining them)
        if not vulkan_device.info.subgroup:
            pytest.skip("adapter without subgroups")
        monkeypatch.setattr(vulkan_device, "info", dataclasses.replace(vulkan_device.info, adapter_type="DiscreteGPU"))
    name = next(n for n in ALL if n.startswith(f"{version}_L2"))
    plan = {"att": "nf4", "att.key": "int8", "att.value": "none", "ffn.key": "sf4"}
    model = rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device, quant=plan)
    for layer in model.layers:
        assert [layer.receptance.quant.value, layer.key.quant.value, layer.output.quant.value] == ["nf4", "int8", "nf4"]
        assert isinstance(layer.value, Matrix) and isinstance(layer.ffn_value, Matrix)
        assert layer.ffn_key.quant.value == "sf4"
    # each matrix decoded as its own kind: the logits are those of a checkpoint holding the
    # dequantized weights, token by token (one-token kernels) and as a prompt
    from safetensors.numpy import save_file

    from rwkv_webgpu.weights import open_checkpoint
    from rwkv_webgpu.weights.quant import QuantPlan, quant_for, quantize

    layers = set(range(len(model.layers)))
    with open_checkpoint(FIX / "models" / f"{name}.pth") as ckpt:
        tensors = {}
        for n in ckpt.names():
            w = ckpt.load(n, np.float32)
            kind = quant_for(n, QuantPlan.parse(plan), layers)
            tensors[n] = w if kind.value == "none" else np.ascontiguousarray(quantize(w, kind).dequantize())
    save_file(tensors, str(tmp_path / "dequantized.safetensors"))
    ref = rw.load_model(tmp_path / "dequantized.safetensors", device=vulkan_device)
    tokens = np.load(FIX / "golden" / f"{name}.npz")["tokens"].tolist()
    expect = ref.forward(tokens, ref.new_state(), full=True)
    state = model.new_state()
    stepped = np.stack([model.forward([t], state) for t in tokens])
    whole = model.forward(tokens, model.new_state(), full=True)
    for got in (stepped, whole):
        np.testing.assert_allclose(got, expect, rtol=0, atol=1e-3 * np.abs(expect).max())


@pytest.mark.parametrize("bad, words", [
    ({"att": "int3"}, "att: unknown quantization 'int3'"),
    ({"att.w1": "int8"}, "unknown matrix 'att.w1'"),
    ("att=int8,ffn", "KEY=KIND"),
    ("bogus=nf4", "unknown matrix 'bogus'"),
    (8, "got 8"),
    ({"ffn": 4}, "ffn: quantization must be a name"),
])  # fmt: skip
def test_bad_quantization_mix_is_refused(vulkan_device, bad, words):
    with pytest.raises(rw.ConfigError, match=re.escape(words)):
        rw.load_model(FIX / "models" / f"{ALL[0]}.pth", device=vulkan_device, quant=bad)


def test_quant_layers_limits_quantization(vulkan_device):
    name = [n for n in ALL if n.startswith("v7_L3")][0]
    model = rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device, quant="int8", quant_layers=1)
    assert isinstance(model.layers[0].key, QMatrix)
    assert isinstance(model.layers[1].key, Matrix) and isinstance(model.layers[2].ffn_key, Matrix)
    assert isinstance(model.layers[0].w1, Matrix)  # small LoRA matrices stay f16
    assert rel_err(model, name) <= 2e-2


def test_quantized_memory(vulkan_device, tmp_path):
    import sys

    sys.path.insert(0, str(FIX.parents[1] / "benchmarks"))
    from random_model import write_random_model

    path = tmp_path / "v6-small.safetensors"
    write_random_model("v6-small", path)
    sizes = {}
    att = {"receptance", "key", "value", "output", "gate"}
    for quant in (None, "int8", "nf4", "att=int8,ffn=nf4"):
        model = rw.load_model(path, device=vulkan_device, quant=quant, tokenizer="world")
        sizes[quant] = sum(m.nbytes for m in matrices(model, LARGE))
        sizes[quant, "att"] = sum(m.nbytes for m in matrices(model, att))
    assert 0.5 <= sizes["int8"] / sizes[None] <= 0.56  # 1 byte per weight + min/step per 128
    assert 0.25 <= sizes["nf4"] / sizes[None] <= 0.29  # half a byte + a scale per 64
    # the mix: int8 attention matrices, 4-bit FFN ones
    mix = sizes["att=int8,ffn=nf4"]
    assert mix == sizes["int8", "att"] + sizes["nf4"] - sizes["nf4", "att"]
    assert 0.33 <= mix / sizes[None] <= 0.40


def test_unknown_quantization_is_refused(vulkan_device):
    with pytest.raises(rw.RWKVError, match="int8"):
        rw.load_model(FIX / "models" / f"{ALL[0]}.pth", device=vulkan_device, quant="int3")


@pytest.mark.parametrize("quant", ["int8", "nf4"])
def test_quantized_v6_decoding_with_lora_halves_inside(vulkan_device, quant, monkeypatch):
    """Quantized RWKV-6 decoding through the fused LoRA kernels (what GPUs run) equals the path
    with the separate products, token by token."""
    from rwkv_webgpu.models.v5 import V5Model

    name = next(n for n in ALL if n.startswith("v6"))
    tokens = np.load(FIX / "golden" / f"{name}.npz")["tokens"].tolist()
    runs = {}
    for inside in (True, False):
        monkeypatch.setattr(V5Model, "lora_inside_forced", inside)
        model = rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device, quant=quant)
        state = model.new_state()
        runs[inside] = np.stack([model.forward([t], state) for t in tokens])
        g = model.runner.graph(state)[0]
        ran = {it.label for it in g.items if hasattr(it, "grid") and 0 not in it.grid(it.counter.value)}
        assert any(label.endswith("att.ln1_lora") for label in ran) == inside
    np.testing.assert_allclose(runs[True], runs[False], rtol=0, atol=1e-4 * np.abs(runs[False]).max())


@pytest.mark.parametrize("quant", ["int8", "nf4"])
@pytest.mark.parametrize("version", ["v6", "v7"])
def test_quantized_decoding_on_gpus_groups_the_f16_products(vulkan_device, quant, version, monkeypatch):
    """On GPUs the f16 products ready with the quantized r/k/v(/g) (RWKV-6's decay LoRA first half,
    RWKV-7's LoRA first halves) join their group on one-token steps (one dispatch fewer a layer);
    decoding token by token then still gives the prompt's logits."""
    import dataclasses

    if not vulkan_device.info.subgroup:
        pytest.skip("adapter without subgroups")
    monkeypatch.setattr(vulkan_device, "info", dataclasses.replace(vulkan_device.info, adapter_type="DiscreteGPU"))
    name = next(n for n in ALL if n.startswith(f"{version}_L2"))
    tokens = np.load(FIX / "golden" / f"{name}.npz")["tokens"].tolist()
    model = rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device, quant=quant)
    state = model.new_state()
    stepped = np.stack([model.forward([t], state) for t in tokens])
    g = model.runner.graph(state)[0]
    ran = [it.label for it in g.items if hasattr(it, "grid") and 0 not in it.grid(it.counter.value)]
    assert not any(label.endswith(("att.decay_w1", "att.mix_products")) for label in ran)
    assert sum(label.endswith(f"att.mix_products.{quant}") for label in ran) == len(model.layers)
    whole = model.forward(tokens, model.new_state(), full=True)
    np.testing.assert_allclose(stepped, whole, rtol=0, atol=1e-4 * np.abs(whole).max())


def test_quantize_example_runs(vulkan_device):
    """examples/quantize.py: each kind loads, the mix's prefab reloads with identical logits."""
    import os
    import subprocess
    import sys

    root = FIX.parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, str(root / "examples" / "quantize.py"), "--adapter", "vulkan",
                          "--max-tokens", "4"], check=False, capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr + res.stdout
    if "no model at" not in res.stdout:
        for kind in ("int8", "nf4", "att=int8,ffn=nf4"):
            assert f"\n{kind} " in res.stdout
        assert "identical logits: True" in res.stdout
