"""token_mix with a per-token delta (token_shift.wgsl `mix_delta`, RWKV-6's data-dependent mix)
over packed slots, against a float64 numpy reference."""

import numpy as np
import oracles
import oracles_v4v5 as ov
import pytest

from rwkv_webgpu.gpu import Act, Counter, Graph
from rwkv_webgpu.ops import token_mix

SENTINEL = 777.25


def run_mix_delta(device, lens, c, mixes, *, x_off=0, mu_off=0, extra=2, store=False, seed=0):
    rng = np.random.default_rng(seed)
    b, t = len(lens), int(sum(lens))
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
    # delta has out's layout [mixes, plane]; its padding is junk that must not leak anywhere
    delta = rng.standard_normal((mixes, plane)).astype(np.float32)
    cur = np.concatenate([oracles.cursors(lens), np.full(extra, 12345, np.uint32)])
    out = Act(device.upload(np.full(mixes * plane, SENTINEL, np.float32), "out"), c, c, 0, tmax)
    cbuf = device.upload(cur, "cursors")
    dbuf = device.upload(delta, "delta")
    g = Graph(device)
    cnt = Counter(device, "n")
    token_mix(
        g, cnt, cbuf, xa, shift, device.upload(vec, "vec"), mu_off, out,
        mixes=mixes, slots=b, plane=plane, delta=dbuf, store=store,
    )  # fmt: skip
    cnt.set(t)
    g.run()
    got_out = device.read(out.buffer)[: mixes * plane].reshape(mixes, plane)
    got_shift = device.read(shift)[: b * c].reshape(b, c)
    np.testing.assert_array_equal(
        device.read(dbuf)[: delta.size].reshape(delta.shape), delta
    )  # read-only
    d_tc = delta[:, : t * c].reshape(mixes, t, c)
    return x, shift0, mu, d_tc, got_out, got_shift


@pytest.mark.parametrize(
    "lens", [[1], [4], [3, 0, 2], [0, 5, 1, 0], [2, 2, 2]], ids=lambda l: "-".join(map(str, l))
)
@pytest.mark.parametrize("c", [1, 37, 130])
@pytest.mark.parametrize("mixes", [1, 5])
def test_mix_delta(device, lens, c, mixes):
    t = sum(lens)
    x, shift0, mu, delta, out, shift = run_mix_delta(
        device, lens, c, mixes, x_off=7, mu_off=3, seed=len(lens) * 31 + c + mixes
    )
    ref = ov.token_shift_delta(x[:t], shift0, mu, delta, lens)
    for m in range(mixes):
        np.testing.assert_allclose(out[m, : t * c].reshape(t, c), ref[m], rtol=1e-6, atol=1e-6)
        # rows >= t of each plane (and the plane padding) are untouched
        np.testing.assert_array_equal(out[m, t * c :], SENTINEL)
    np.testing.assert_array_equal(shift, shift0)  # mix alone never writes shift


def test_zero_delta_matches_mix(device):
    """delta = 0 gives token_shift's plain mix (oracles.token_shift)."""
    lens, c, mixes = [3, 0, 2], 37, 5
    t = sum(lens)
    x, shift0, mu, delta, out, _ = run_mix_delta(device, lens, c, mixes, seed=2)
    ref = ov.token_shift_delta(x[:t], shift0, mu, np.zeros_like(delta), lens)
    plain, _ = oracles.token_shift(x[:t], shift0, mu, lens)
    np.testing.assert_allclose(ref, plain, rtol=0, atol=1e-12)  # the two oracles agree
    want = ov.token_shift_delta(x[:t], shift0, mu, delta, lens)
    np.testing.assert_allclose(out[:, : t * c].reshape(mixes, t, c), want, rtol=1e-6, atol=1e-6)


def test_mix_delta_then_store(device):
    """mix_delta (recorded first) sees the old shift rows; store then replaces non-empty slots'."""
    lens, c = [2, 0, 3], 21
    t = sum(lens)
    x, shift0, mu, delta, out, shift = run_mix_delta(device, lens, c, 2, store=True, seed=8)
    ref = ov.token_shift_delta(x[:t], shift0, mu, delta, lens)
    np.testing.assert_allclose(out[:, : t * c].reshape(2, t, c), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(shift, np.stack([x[1], shift0[1], x[4]]))


def test_zero_tokens_is_a_no_op(device):
    _, shift0, _, _, out, shift = run_mix_delta(device, [0, 0], 11, 5, seed=5)
    np.testing.assert_array_equal(shift, shift0)
    np.testing.assert_array_equal(out, SENTINEL)


@pytest.mark.parametrize("c,d", [(37, 12), (130, 32), (64, 9), (70, 44)])  # 44: a run of 4 words, then 2
@pytest.mark.parametrize("lens", [[1], [1, 0, 1, 1], [3, 0, 2], [4]], ids=lambda l: "-".join(map(str, l)))
def test_mix_lora_matches_numpy(device, c, d, lens):
    """token_mix_lora: the delta of each mix computed from its LoRA matrix in the mix kernel
    (one token per slot, and prompts: the previous token's row, or the saved row for a slot's
    first token), against numpy; each slot's saved row becomes its last token's."""
    from rwkv_webgpu.gpu import act_buffer, upload_matrices
    from rwkv_webgpu.ops import token_mix_lora

    rng = np.random.default_rng(c * 7 + d + len(lens))
    b, t, mixes = len(lens), sum(lens), 5
    tmax, plane = t + 2, (t + 2) * c
    x = rng.standard_normal((tmax, c)).astype(np.float32)
    shift0 = rng.standard_normal((b, c)).astype(np.float32)
    mu = rng.uniform(0, 1, (mixes, c)).astype(np.float32)
    ws = [(rng.standard_normal((c, d)) / np.sqrt(d)).astype(np.float16) for _ in range(mixes)]
    hid = rng.standard_normal((tmax, mixes * d + 3)).astype(np.float32)  # a wider row than needed
    w2 = upload_matrices(device, ws, [f"w2.{m}" for m in range(mixes)])
    ha = act_buffer(device, tmax, hid.shape[1], "hid")
    device.write(ha.buffer, hid)
    xa = Act(device.upload(x, "x"), c, c, 0, tmax)
    shift = device.upload(shift0, "shift")
    vec = device.upload(np.concatenate([np.zeros(3, np.float32), mu.reshape(-1)]), "vec")
    out = Act(device.upload(np.full(mixes * plane, SENTINEL, np.float32), "out"), c, c, 0, tmax)
    g, cnt = Graph(device), Counter(device, "n")
    token_mix_lora(g, cnt, device.upload(oracles.cursors(lens), "cursors"), xa, shift, vec, 3, out, w2=w2,
                   hid=Act(ha.buffer, mixes * d, hid.shape[1], 0, tmax), slots=b, plane=plane, store=True)  # fmt: skip
    cnt.set(t)
    g.run()
    got = device.read(out.buffer)[: mixes * plane].reshape(mixes, plane)
    slot_of = [s for s, n in enumerate(lens) for _ in range(n)]
    want_shift = shift0.copy()
    for tok, s in enumerate(slot_of):
        prev = shift0[s] if tok == 0 or slot_of[tok - 1] != s else x[tok - 1]
        for m in range(mixes):
            delta = ws[m].astype(np.float64) @ hid[tok, m * d : (m + 1) * d]
            want = x[tok] + (prev - x[tok]) * (mu[m] + delta)
            np.testing.assert_allclose(got[m, tok * c : (tok + 1) * c], want, rtol=1e-5, atol=1e-5)
        want_shift[s] = x[tok]
    assert (got[:, t * c :] == SENTINEL).all()  # nothing past the step's tokens
    np.testing.assert_array_equal(device.read(shift)[: b * c].reshape(b, c), want_shift)


def test_mix_lora_input_limit(device):
    """More LoRA inputs than the kernel stages (MAX_LORA_H): not fused (lora_fits), and refused."""
    from rwkv_webgpu.gpu import upload_matrices
    from rwkv_webgpu.ops.token_shift import MAX_LORA_H, lora_fits

    d = MAX_LORA_H // 5 + 1
    w2 = upload_matrices(device, [np.zeros((8, d), np.float16) for _ in range(5)], [f"w{m}" for m in range(5)])
    assert not lora_fits(w2, 8)
    assert lora_fits(w2[:4], 8) == (4 * d <= MAX_LORA_H)


def test_mix_lora_mix_count_limit(device):
    """More mixes than one workgroup of MIX_CH channels x mixes holds (256 invocations): not fused."""
    from rwkv_webgpu.gpu import upload_matrices
    from rwkv_webgpu.ops.token_shift import MAX_MIX_INVOCATIONS, MIX_CH, lora_fits

    most = MAX_MIX_INVOCATIONS // MIX_CH
    w2 = upload_matrices(device, [np.zeros((8, 4), np.float16) for _ in range(most + 1)], [f"w{m}" for m in range(most + 1)])
    assert lora_fits(w2[:most], 8)
    assert not lora_fits(w2, 8)

