"""The recorded graph: replaying a step shape through wgpu-native's C calls gives exactly what
the public API gives, follows new counter values per key, and forgets programs when the graph
changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rwkv_webgpu as rw
from rwkv_webgpu.gpu import Counter, Graph, act_buffer
from rwkv_webgpu.models.step import Plan
from rwkv_webgpu.ops import layer_norm

FIX = Path(__file__).resolve().parent / "fixtures"
V6 = FIX / "models" / "v6_L3_C48_V53.pth"


def _norm_graph(device, rows, cols):
    g, n = Graph(device), Counter(device, "n")
    x, y = act_buffer(device, rows, cols, "x"), act_buffer(device, rows, cols, "y")
    vec = device.upload(np.concatenate([np.full(cols, 2.0), np.full(cols, 0.5)]).astype(np.float32))
    layer_norm(g, n, x, y, vec, 0, cols, label="ln")
    return g, n, x, y


def _run(device, g, key):
    enc = device.device.create_command_encoder()
    count = g.encode(enc, key=key)
    device.queue.submit([enc.finish()])
    return count


def test_replay_follows_the_counter_of_each_key(device):
    if Graph(device).native is None:
        pytest.skip("not the wgpu-native backend")
    g, n, x, y = _norm_graph(device, 7, 37)
    data = np.random.default_rng(0).standard_normal((7, 37)).astype(np.float32)
    device.write(x.buffer, data)
    want = (data - data.mean(1, keepdims=True)) / np.sqrt(data.var(1, keepdims=True) + 1e-5) * 2 + 0.5
    for rows in (3, 7, 3):  # the second 3 replays the remembered program
        device.write(y.buffer, np.zeros((7, 37), np.float32))
        n.set(rows)
        assert _run(device, g, key=rows) == 1
        got = device.read(y.buffer)[: 7 * 37].reshape(7, 37)
        np.testing.assert_allclose(got[:rows], want[:rows], atol=1e-5)
        assert not got[rows:].any()
    assert len(g._programs) == 2
    g.copy(lambda enc, ctx: None, "nothing")  # a changed graph forgets what it replayed
    assert not g._programs


def test_model_steps_equal_the_public_api_path(vulkan_device, monkeypatch):
    """A model stepped with replayed programs gives the same logits, bit for bit, as one whose
    graphs encode every dispatch through wgpu-py (a prompt chunk, then decode steps)."""
    outs = []
    for native in (True, False):
        model = rw.load_model(V6, device=vulkan_device, token_chunk_size=8)
        state = model.new_state()
        if not native:
            monkeypatch.setattr(Graph, "_replay", lambda *a: pytest.fail("replayed"))
            g, _ = model.runner.graph(state)
            g.native = None
        seq = [model.forward(list(range(1, 20)), state)]
        for t in (5, 9, 11):
            seq.append(model.forward([t], state))
        outs.append(np.stack(seq))
        monkeypatch.undo()
    np.testing.assert_array_equal(outs[0], outs[1])


def test_plan_shape_names_every_counter_it_sets():
    """The key the runner replays by must change whenever the counters it sets do."""
    a = Plan.pack([[1, 2], [3]], [0, 1], False)
    b = Plan.pack([[1], [3, 4]], [0, 1], False)
    c = Plan.pack([[7, 8], [9]], [0, 1], False)
    assert a.shape != b.shape and a.shape == c.shape
    assert Plan.pack([[1], [3]], [0], False).shape != Plan.pack([[1], [3]], [0, 1], False).shape
    d = Plan.pack([[1]], [0], False)
    d.sample = np.zeros((1, 4), np.float32)
    assert d.shape != Plan.pack([[1]], [0], False).shape
