"""norm_mix (layer norm + token mix in one kernel, for decoding steps) against the two ops it
replaces (the same sums in the same order: equal up to how a GPU compiler fuses multiply-adds)
and against float64 numpy."""

import numpy as np
import oracles
import pytest

from rwkv_webgpu.gpu import Counter, Graph, act_buffer
from rwkv_webgpu.ops import layer_norm, norm_mix, token_mix


def setup(device, lens, c, mixes, seed):
    rng = np.random.default_rng(seed)
    b, t = len(lens), int(sum(lens))
    tmax = t + 2
    x = rng.standard_normal((tmax, c)).astype(np.float32) * 3 + 1
    shift0 = rng.standard_normal((b, c)).astype(np.float32)
    vec = rng.standard_normal((2 + 2 * mixes) * c).astype(np.float32)  # ln w, ln b, mu, delta-free
    vec[2 * c : (2 + mixes) * c] = rng.uniform(0, 1, mixes * c)
    delta = rng.standard_normal((mixes, tmax, c)).astype(np.float32) * 0.1
    bufs = {
        "cur": device.upload(oracles.cursors(lens), "cursors"),
        "x": act_buffer(device, tmax, c, "x"),
        "vec": device.upload(vec, "vec"),
        "delta": device.upload(delta, "delta"),
    }
    device.write(bufs["x"].buffer, x)
    return x, shift0, vec, delta, bufs, t, tmax


def run(device, lens, c, mixes, fused, *, store, with_delta, seed=0):
    x, shift0, vec, delta, bufs, t, tmax = setup(device, lens, c, mixes, seed)
    shift = device.upload(shift0, "shift")
    xn = act_buffer(device, tmax, c, "xn")
    out = act_buffer(device, tmax, c, "out", planes=mixes)
    g, cnt = Graph(device), Counter(device, "n")
    kw = {"mixes": mixes, "slots": len(lens), "plane": tmax * c, "delta": bufs["delta"] if with_delta else None, "store": store}
    if fused:
        norm_mix(g, cnt, bufs["cur"], bufs["x"], xn, shift, bufs["vec"], 0, c, 2 * c, out, eps=1e-5, **kw)
    else:
        layer_norm(g, cnt, bufs["x"], xn, bufs["vec"], 0, c, eps=1e-5)
        token_mix(g, cnt, bufs["cur"], xn, shift, bufs["vec"], 2 * c, out, **kw)
    cnt.set(t)
    g.run()
    read = lambda buf, n: device.read(buf)[:n]
    return read(xn.buffer, t * c), read(out.buffer, mixes * tmax * c), read(shift, len(lens) * c), (x, shift0, vec, delta)


@pytest.mark.parametrize("lens", [[1], [1, 0, 1, 1], [0, 1]])
@pytest.mark.parametrize("c", [40, 1030])
@pytest.mark.parametrize("store,with_delta", [(True, False), (False, True)])
@pytest.mark.parametrize("mixes", [1, 3, 6, 7])  # up to 6 weights loaded early, a 7th in the loop
def test_norm_mix_equals_norm_then_mix(device, lens, c, store, with_delta, mixes):
    fused = run(device, lens, c, mixes, True, store=store, with_delta=with_delta)
    apart = run(device, lens, c, mixes, False, store=store, with_delta=with_delta)
    for a, b in zip(fused[:3], apart[:3]):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6)
    # and against numpy: one token per slot, so prev is the saved row
    x, shift0, vec, delta = fused[3]
    t = sum(lens)
    xs = x[:t].astype(np.float64)
    mean = xs.mean(-1, keepdims=True)
    xn = (xs - mean) / np.sqrt(((xs - mean) ** 2).mean(-1, keepdims=True) + 1e-5) * vec[:c] + vec[c : 2 * c]
    np.testing.assert_allclose(fused[0].reshape(t, c), xn, rtol=1e-4, atol=1e-4)
    slot = [b for b, n in enumerate(lens) for _ in range(n)]
    mu = vec[2 * c : (2 + mixes) * c].reshape(mixes, 1, c) + (delta[:, :t] if with_delta else 0)
    want = xn + (shift0[slot] - xn) * mu
    got = fused[1].reshape(mixes, -1, c)[:, :t]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    saved = fused[2].reshape(len(lens), c)
    for b, n in enumerate(lens):
        expect = xn[slot.index(b)] if (store and n) else shift0[b]
        np.testing.assert_allclose(saved[b], expect, rtol=1e-4, atol=1e-4)


def test_graph_only_when_picks_a_variant(device):
    """Dispatches recorded under Graph.only_when run only when their condition holds."""
    c, lens = 16, [1]
    *_, bufs, t, tmax = setup(device, lens, c, 1, 1)
    xn = act_buffer(device, tmax, c, "xn")
    g, cnt = Graph(device), Counter(device, "n")
    flag = {"on": False}
    with g.only_when(lambda: flag["on"]):
        layer_norm(g, cnt, bufs["x"], xn, bufs["vec"], 0, c)
    cnt.set(t)
    g.run()
    assert not device.read(xn.buffer)[:c].any()
    flag["on"] = True
    g.run()
    assert device.read(xn.buffer)[:c].any()


@pytest.mark.parametrize("c,rows", [(40, 7), (1030, 160), (2048, 33), (3072, 5)])  # odd widths; both workgroup sizes
@pytest.mark.parametrize("lens", [[1], [1, 0, 1, 1]], ids=lambda l: "-".join(map(str, l)))
def test_norm_lora_matches_numpy(device, c, rows, lens):
    """norm_lora: layer norm, one token mix and tanh(W1 @ mixed) in one kernel (RWKV-6's mix LoRA
    first half while decoding), against float64 numpy; xn is written, the saved rows are kept,
    and nothing past the rows or the step's tokens is touched."""
    from rwkv_webgpu.gpu import Act, upload_matrix
    from rwkv_webgpu.ops import norm_lora

    x, shift0, vec, _, bufs, t, tmax = setup(device, lens, c, 1, c + rows)
    rng = np.random.default_rng(rows)
    w1 = (rng.standard_normal((rows, c)) / np.sqrt(c)).astype(np.float16)
    shift = device.upload(shift0, "shift")
    xn = act_buffer(device, tmax, c, "xn")
    width = rows + 3  # a wider hid row than needed, starting 2 elements in
    hid = device.upload(np.full(tmax * width, 7.0, np.float32), "hid")
    g, cnt = Graph(device), Counter(device, "n")
    norm_lora(g, cnt, bufs["cur"], bufs["x"], xn, shift, bufs["vec"], 0, c, 2 * c, upload_matrix(device, w1, "w1"),
              Act(hid, rows, width, 2, tmax), slots=len(lens), eps=1e-5)  # fmt: skip
    cnt.set(t)
    g.run()
    xs = x[:t].astype(np.float64)
    mean = xs.mean(-1, keepdims=True)
    want_xn = (xs - mean) / np.sqrt(((xs - mean) ** 2).mean(-1, keepdims=True) + 1e-5) * vec[:c] + vec[c : 2 * c]
    np.testing.assert_allclose(device.read(xn.buffer)[: t * c].reshape(t, c), want_xn, rtol=1e-4, atol=1e-4)
    slot = [b for b, n in enumerate(lens) for _ in range(n)]
    mixed = want_xn + (shift0[slot] - want_xn) * vec[2 * c : 3 * c]
    got = device.read(hid)[: tmax * width].reshape(tmax, width)
    np.testing.assert_allclose(got[:t, 2 : 2 + rows], np.tanh(mixed @ w1.astype(np.float64).T), rtol=1e-4, atol=1e-4)
    assert (got[:t, :2] == 7.0).all() and (got[:t, 2 + rows :] == 7.0).all() and (got[t:] == 7.0).all()
    np.testing.assert_array_equal(device.read(shift)[: len(lens) * c].reshape(len(lens), c), shift0)


def test_norm_lora_refuses_what_it_cannot_read(device):
    from rwkv_webgpu.errors import ShapeError
    from rwkv_webgpu.gpu import upload_matrix
    from rwkv_webgpu.ops import norm_lora
    from rwkv_webgpu.ops.token_shift import MAX_NL_C, norm_lora_fits

    wide = upload_matrix(device, np.zeros((4, MAX_NL_C + 8), np.float16), "w1")
    assert not norm_lora_fits(wide, MAX_NL_C + 8)
    assert norm_lora_fits(upload_matrix(device, np.zeros((4, 16), np.float16), "w1"), 16)
    *_, bufs, _, tmax = setup(device, [1], 16, 1, 0)
    w1 = upload_matrix(device, np.zeros((4, 24), np.float16), "w1")  # K is not C
    hid = act_buffer(device, tmax, 4, "hid")
    with pytest.raises(ShapeError, match="one f16 part"):
        norm_lora(Graph(device), Counter(device, "n"), bufs["cur"], bufs["x"], act_buffer(device, tmax, 16, "xn"),
                  device.upload(np.zeros(16, np.float32), "s"), bufs["vec"], 0, 16, 32, w1, hid, slots=1, eps=1e-5)  # fmt: skip
