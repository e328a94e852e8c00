"""token_mix (with and without saving the shift rows) over packed slots against a float64 numpy reference."""

import numpy as np
import oracles
import pytest

from rwkv_webgpu.gpu import Act, Counter, Graph, act_buffer
from rwkv_webgpu.ops import token_mix

SENTINEL = 777.25


def run_shift(device, lens, c, mixes, *, x_off=0, extra=2, mu_off=0, store=True, seed=0):
    rng = np.random.default_rng(seed)
    b = len(lens)
    t = int(sum(lens))
    tmax = t + extra
    plane = tmax * c + 5  # planes need not be packed tightly
    x = rng.standard_normal((tmax, c)).astype(np.float32)
    xbuf = rng.standard_normal(x_off + tmax * c).astype(np.float32)
    xbuf[x_off:] = x.reshape(-1)
    xa = Act(device.upload(xbuf, "x"), c, c, x_off, tmax)
    shift0 = rng.standard_normal((b, c)).astype(np.float32)
    shift = device.upload(shift0, "shift")
    mu = rng.uniform(0, 1, (mixes, c)).astype(np.float32)
    vec = rng.standard_normal(mu_off + mixes * c + 4).astype(np.float32)
    vec[mu_off : mu_off + mixes * c] = mu.reshape(-1)
    cur = oracles.cursors(lens)
    # the model's cursor buffer is sized for tmax tokens: pad with junk slot ids
    cur = np.concatenate([cur, np.full(extra, 12345, np.uint32)])
    out = Act(device.upload(np.full(mixes * plane, SENTINEL, np.float32), "out"), c, c, 0, tmax)
    cbuf = device.upload(cur, "cursors")
    g = Graph(device)
    cnt = Counter(device, "n")
    token_mix(
        g,
        cnt,
        cbuf,
        xa,
        shift,
        device.upload(vec, "vec"),
        mu_off,
        out,
        mixes=mixes,
        slots=b,
        plane=plane,
        store=store,
    )
    cnt.set(t)
    g.run()
    got_out = device.read(out.buffer)[: mixes * plane].reshape(mixes, plane)
    got_shift = device.read(shift)[: b * c].reshape(b, c)
    return x, shift0, mu, got_out, got_shift, plane


@pytest.mark.parametrize(
    "lens",
    [[1], [4], [3, 0, 1, 5], [0, 2, 7], [2, 3, 0], [0], [1, 1, 1, 0, 1]],
)
@pytest.mark.parametrize("c", [1, 37, 130])
@pytest.mark.parametrize("mixes", [1, 6])
def test_token_mix_and_store(device, lens, c, mixes):
    t = sum(lens)
    x, shift0, mu, out, shift, _ = run_shift(
        device, lens, c, mixes, x_off=7, mu_off=3, seed=len(lens) * 31 + c + mixes
    )
    ref_out, ref_shift = oracles.token_shift(x[:t], shift0, mu, lens)
    for m in range(mixes):
        np.testing.assert_allclose(out[m, : t * c].reshape(t, c), ref_out[m], rtol=1e-6, atol=1e-6)
        # rows >= t of each plane (and the plane padding) are untouched
        np.testing.assert_array_equal(out[m, t * c :], SENTINEL)
    # a slot that had tokens now holds its last token exactly; an empty slot keeps its old row
    for b, n in enumerate(lens):
        np.testing.assert_array_equal(shift[b], x[sum(lens[:b]) + n - 1] if n else shift0[b])
    np.testing.assert_array_equal(shift, ref_shift.astype(np.float32))


def test_mix_reads_shift_before_store(device):
    """The mix reads each slot's old shift row before the same dispatch replaces it."""
    lens = [2, 1]
    x, shift0, mu, out, shift, _ = run_shift(device, lens, 5, 1, seed=3)
    ref_out, _ = oracles.token_shift(x[:3], shift0, mu, lens)
    np.testing.assert_allclose(out[0, :15].reshape(3, 5), ref_out[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(shift, x[[1, 2]])


def test_mix_only_keeps_shift(device):
    _, shift0, _, _, shift, _ = run_shift(device, [3, 0, 2], 9, 6, store=False, seed=4)
    np.testing.assert_array_equal(shift, shift0)


def test_zero_tokens_is_a_no_op(device):
    _, shift0, _, out, shift, _ = run_shift(device, [0, 0], 11, 6, seed=5)
    np.testing.assert_array_equal(shift, shift0)
    np.testing.assert_array_equal(out, SENTINEL)


def test_out_offset_rejected(device):
    a = act_buffer(device, 2, 4, "a")
    g = Graph(device)
    with pytest.raises(ValueError):
        token_mix(
            g,
            Counter(device, "n"),
            a.buffer,
            a,
            a.buffer,
            a.buffer,
            0,
            a.at(4),
            mixes=1,
            slots=1,
            plane=8,
        )
