"""Prompt steps that send f16 embedding rows and widen them on the GPU (StepRunner.widen_from)
give the same logits, bit for bit, as rows widened on the host."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rwkv_webgpu as rw
from rwkv_webgpu.models.step import Plan

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def _model(device, name: str, widen_from: int | None, chunk: int):
    model = rw.load_model(FIX / "models" / f"{name}.pth", device=device, token_chunk_size=chunk)
    model.emb = model.emb.astype(np.float16)  # the fixtures' tables may be f32; widening needs f16
    model.runner.widen_from = widen_from
    return model


@pytest.mark.parametrize("name", ["v4_L3_C48_V79", "v6_L2_C64_V67", "v7_L3_C64_V89"])
@pytest.mark.parametrize("chunk", [7, 128])
def test_gpu_widened_rows_give_the_host_path_logits(device, name, chunk):
    tokens = [int(t) for t in np.random.default_rng(5).integers(0, 40, 30)]
    host = _model(device, name, None, chunk)
    gpu = _model(device, name, 4, chunk)
    want = host.forward(tokens, host.new_state(), full=True)
    got = gpu.forward(tokens, gpu.new_state(), full=True)
    np.testing.assert_array_equal(got, want)
    # a one-token step after the prompt goes the host way on both (below widen_from)
    sh, sg = host.new_state(), gpu.new_state()
    host.forward(tokens, sh)
    gpu.forward(tokens, sg)
    np.testing.assert_array_equal(gpu.forward([3], sg), host.forward([3], sh))


def test_widening_is_chosen_by_step_size_and_table_type(device):
    model = _model(device, "v6_L2_C64_V67", 16, 64)
    state = model.new_state()
    runner = model.runner
    assert runner.widens(state, Plan.pack([list(range(16))], [0], False))
    assert not runner.widens(state, Plan.pack([list(range(15))], [0], False))
    labels = [label for label, _ in runner.profile(state, Plan.pack([list(range(20))], [0], False))]
    assert "embed.widen" in labels
    model.emb = model.emb.astype(np.float32)
    assert not runner.widens(state, Plan.pack([list(range(16))], [0], False))
    runner.widen_from = None
    model.emb = model.emb.astype(np.float16)
    assert not runner.widens(state, Plan.pack([list(range(64))], [0], False))
