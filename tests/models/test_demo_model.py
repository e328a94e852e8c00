"""The bundled demo model: matches the official implementation and generates from the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import rwkv_webgpu as rw
from rwkv_webgpu.cli import demo_model_path, main

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def test_demo_model_ships_within_budget():
    path = demo_model_path()
    assert path is not None
    size = path.stat().st_size + path.with_name("tokenizer.json").stat().st_size
    assert size <= 10 * 2**20


def test_demo_logits_match_official(device):
    g = np.load(FIX / "demo_golden.npz")
    model = rw.load_model(demo_model_path(), device=device, tokenizer=demo_model_path().with_name("tokenizer.json"))
    assert model.tokenizer.encode(str(g["text"]))[: len(g["tokens"])] == g["tokens"].tolist()
    ours = model.forward(g["tokens"].tolist(), model.new_state(), full=True)
    assert np.abs(ours - g["logits"]).max() / np.abs(g["logits"]).max() <= 2e-3


def test_readme_main_job_generates_text(vulkan_device, capsys):
    """`rwkv-webgpu generate --prompt ...` with no --model uses the demo model."""
    code = main(["--adapter", "vulkan", "generate", "--prompt", "The Python interpreter", "--max-tokens", "24", "--seed", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("The Python interpreter")
    words = out.split()
    assert len(words) > 6 and sum(w.isalpha() for w in words) > 4
