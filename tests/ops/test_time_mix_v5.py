"""RWKV-5/6 time-mix kernel (multi-head WKV, group norm, gate) against the float64 oracle."""

import numpy as np
import oracles
import oracles_v4v5 as ov
import pytest

from rwkv_webgpu.errors import ShapeError
from rwkv_webgpu.gpu import Counter, Graph
from rwkv_webgpu.ops import time_mix_v5

PLANES = ("r", "w", "k", "v", "g")
VEC = ("decay", "u", "lnw", "lnb")
EPS = 64e-5
SENTINEL = 4321.0
MAX_ERR: dict[str, float] = {}  # worst error relative to the output's magnitude, per check


def close(name, got, want, tol=1e-4):
    """|got - want| <= tol * max(1, max|want|) everywhere (and got is finite)."""
    want = np.asarray(want, np.float64)
    assert np.isfinite(got).all(), f"{name}: non-finite values"
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    err = float(np.abs(got - want).max() / scale) if want.size else 0.0
    MAX_ERR[name] = max(MAX_ERR.get(name, 0.0), err)
    assert err <= tol, f"{name}: max error {err:.3g} x {scale:.3g} > {tol}"


def make_case(heads, n, lens, seed, dynamic, gated, extra=2):
    rng = np.random.default_rng(seed)
    c, tmax = heads * n, sum(lens) + extra
    raw = {name: rng.standard_normal((tmax, c)) for name in ("r", "k", "v", "g")}
    if dynamic:  # the decay LoRA's output, added to time_decay
        raw["w"] = rng.standard_normal((tmax, c)) * 0.7
        decay = rng.uniform(-5, 1, c)  # time_decay
    else:  # the w plane is not read: NaN proves it
        raw["w"] = np.full((tmax, c), np.nan)
        decay = np.exp(-np.exp(rng.uniform(-6, 0.5, c)))  # already exp(-exp(time_decay))
    if not gated:
        raw["g"] = np.full((tmax, c), np.nan)
    vec = {
        "decay": decay,
        "u": rng.standard_normal(c) * 0.5,
        "lnw": rng.uniform(0.5, 1.5, c),
        "lnb": rng.standard_normal(c) * 0.1,
    }
    state = rng.standard_normal((len(lens), heads, n, n)) * 0.5
    f32 = lambda a: np.asarray(a, np.float32)
    return (
        {k: f32(v) for k, v in raw.items()},
        {k: f32(v) for k, v in vec.items()},
        f32(state),
        tmax,
    )


def run_v5(device, heads, n, lens, raw, vec, state, tmax, dynamic, gated, seed=0, count=None, decode=False, lora=None):
    """``lora`` (w2 [C, D] f16, hid [tmax, width], hid_at): the decay LoRA second half inside
    `decode`; the w plane then holds NaN (never read)."""
    rng = np.random.default_rng(seed + 7)
    c = heads * n
    plane = tmax * c + 3  # planes need not be packed tightly
    tm = np.full((5, plane), SENTINEL, np.float32)
    for j, name in enumerate(PLANES):
        tm[j, : tmax * c] = raw[name].reshape(-1)
    dl = None
    if lora is not None:
        from rwkv_webgpu.gpu import Act, upload_matrices
        from rwkv_webgpu.ops.time_mix_v5 import decay_lora

        w2, hid, hid_at = lora
        tm[1, : tmax * c] = np.nan
        # behind another matrix in one buffer, as the model's loader may place it
        mats = upload_matrices(device, [np.ones((3, w2.shape[1]), np.float16), w2], ["other", "w2"])
        dl = decay_lora(mats[1], Act(device.upload(hid, "hid"), w2.shape[1], hid.shape[1], hid_at, tmax), c)
        assert dl is not None
    parts, offsets, pos = [], {}, 0  # all vectors in one buffer, junk between them
    for name in VEC:
        gap = int(rng.integers(1, 5))
        parts.append(rng.standard_normal(gap).astype(np.float32))
        offsets[name] = pos + gap
        parts.append(vec[name])
        pos += gap + c
    packed = np.concatenate(parts + [np.zeros(3, np.float32)])
    cur = np.concatenate([oracles.cursors(lens), np.full(tmax - sum(lens), 999, np.uint32)])
    bufs = {
        "cursors": device.upload(cur, "cursors"),
        "tm": device.upload(tm, "tm"),
        "vec": device.upload(packed, "vec"),
        "state": device.upload(state, "state"),
        "y": device.upload(np.full((tmax, c), SENTINEL, np.float32), "y"),
    }
    g = Graph(device)
    cnt = Counter(device, "n")
    time_mix_v5(
        g, cnt, bufs["cursors"], bufs["tm"], bufs["vec"], bufs["state"], bufs["y"],
        c=c, heads=heads, plane=plane, slots=len(lens), dynamic_decay=dynamic, gated=gated,
        offsets=offsets, eps=EPS, decode=(lambda: True) if decode else None, lora=dl,
    )  # fmt: skip
    labels = [item.label for item in g.items]
    assert ("v5.wkv.decode" in labels) == decode
    cnt.set(sum(lens) if count is None else count)
    g.run()
    y = device.read(bufs["y"])[: tmax * c].reshape(tmax, c)
    st = device.read(bufs["state"])[: state.size].reshape(state.shape)
    got_tm = device.read(bufs["tm"])[: tm.size].reshape(tm.shape)
    np.testing.assert_array_equal(got_tm, tm)  # tm is only read
    return y, st


def reference(raw, vec, state, lens, heads, dynamic, gated):
    t = sum(lens)
    w = ov.v6_decay(vec["decay"], raw["w"][:t]) if dynamic else vec["decay"]
    return ov.v5_wkv(
        raw["r"][:t], raw["k"][:t], raw["v"][:t], raw["g"][:t] if gated else None, w,
        vec["u"], vec["lnw"], vec["lnb"], state, lens, heads, EPS,
    )  # fmt: skip


def check(device, heads, n, lens, dynamic, gated, seed, decode=False):
    raw, vec, state, tmax = make_case(heads, n, lens, seed, dynamic, gated)
    y, st = run_v5(device, heads, n, lens, raw, vec, state, tmax, dynamic, gated, seed, decode=decode)
    t = sum(lens)
    y_ref, s_ref = reference(raw, vec, state, lens, heads, dynamic, gated)
    close("v5.y", y[:t], y_ref)
    np.testing.assert_array_equal(y[t:], SENTINEL)  # rows beyond the counter untouched
    close("v5.state", st, s_ref)
    for b, cnt in enumerate(lens):
        if cnt == 0:  # an empty slot's state is bit-for-bit unchanged
            np.testing.assert_array_equal(st[b], state[b])


SHAPES = [(h, n) for h in (1, 2, 3) for n in (1, 16, 64)]
MODES = [(False, False), (False, True), (True, False), (True, True)]
LENS = [[3, 0, 1, 5], [0, 4, 2]]


@pytest.mark.parametrize("heads,n", SHAPES)
@pytest.mark.parametrize(
    "dynamic,gated", MODES, ids=["static", "static-gated", "dynamic", "dynamic-gated"]
)
@pytest.mark.parametrize("lens", LENS, ids=lambda l: "-".join(map(str, l)))
def test_wkv(device, heads, n, dynamic, gated, lens):
    seed = heads * 1000 + n * 10 + 2 * dynamic + gated + len(lens)
    check(device, heads, n, lens, dynamic, gated, seed)


@pytest.mark.parametrize("dynamic", [False, True])
def test_long_sequence(device, dynamic):
    """Enough tokens per slot for the state to matter a lot."""
    check(device, 2, 64, [17, 0, 9], dynamic, True, seed=5 + dynamic)


# Head sizes leaving padding rows in the last workgroup of 16 rows (24, 40) or a partial group of
# 4 columns (6; 1 above); a slot spanning several staged blocks of 8 tokens, slots of every size.
ODD_LENS = [70, 0, 13, 1, 8, 9]


@pytest.mark.parametrize("n", [6, 24, 40])
@pytest.mark.parametrize(
    "dynamic,gated", [(False, False), (True, True)], ids=["static", "dynamic-gated"]
)
def test_odd_head_sizes_and_uneven_slots(device, n, dynamic, gated):
    check(device, 2, n, ODD_LENS, dynamic, gated, seed=300 + n + dynamic)


def test_state_layout(device):
    """One token, r = e_j, u = 0, k = 0: o = S[:, j] (row = value i, column = key j);
    the state then decays by w_j along columns."""
    heads, n, lens = 1, 16, [1]
    raw, vec, state, tmax = make_case(heads, n, lens, 9, False, False)
    j = 5
    raw["r"][0] = 0.0
    raw["r"][0, j] = 1.0
    raw["k"][0] = 0.0
    vec["u"][:] = 0.0
    vec["lnw"][:] = 1.0
    vec["lnb"][:] = 0.0
    y, st = run_v5(device, heads, n, lens, raw, vec, state, tmax, False, False)
    col = state[0, 0, :, j].astype(np.float64)
    want = (col - col.mean()) / np.sqrt(col.var() + EPS)
    np.testing.assert_allclose(y[0], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(st[0, 0], state[0, 0] * vec["decay"][None, :], rtol=1e-6, atol=1e-7)


def test_zero_tokens_is_a_no_op(device):
    heads, n, lens = 2, 16, [0, 0]
    raw, vec, state, tmax = make_case(heads, n, lens, 3, True, True, extra=3)
    y, st = run_v5(device, heads, n, lens, raw, vec, state, tmax, True, True)
    np.testing.assert_array_equal(st, state)
    np.testing.assert_array_equal(y, SENTINEL)


@pytest.mark.parametrize("c,heads", [(130, 1), (64, 3), (64, 0)])
def test_shape_errors(c, heads):
    with pytest.raises(ShapeError):
        time_mix_v5(
            Graph(None), None, None, None, None, None, None, c=c, heads=heads, plane=c, slots=1,
            dynamic_decay=False, gated=False, offsets={k: 0 for k in VEC}, eps=EPS,
        )  # fmt: skip


def _t32(torch, a):
    return torch.tensor(np.asarray(a), dtype=torch.float32)


def test_oracle_matches_official_v5_2(monkeypatch):
    """Guards the numpy oracle: same numbers as the official ``att_seq_v5_2`` (float32)."""
    torch, mod = ov.official_rwkv(monkeypatch)
    F = torch.nn.functional
    rng = np.random.default_rng(21)
    H, N, T = 3, 16, 6
    C = H * N

    def rnd(*shape, sc=1.0):
        return _t32(torch, rng.standard_normal(shape) * sc)

    x, sx, s = rnd(T, C), rnd(C), rnd(H, N, N, sc=0.5)  # s: official layout [H, key, value]
    ln_w, ln_b = _t32(torch, rng.uniform(0.5, 1.5, C)), rnd(C, sc=0.1)
    lx_w, lx_b = _t32(torch, rng.uniform(0.5, 1.5, C)), rnd(C, sc=0.1)
    k_mix, v_mix, r_mix, g_mix = (_t32(torch, rng.uniform(0, 1, C)) for _ in range(4))
    decay = torch.exp(-torch.exp(_t32(torch, rng.uniform(-6, 0.5, C))))
    u = rnd(C, sc=0.5)
    kw, vw, rw, gw = (rnd(C, C, sc=C**-0.5) for _ in range(4))
    out, _, s2 = mod.RWKV.att_seq_v5_2(
        None, x, sx, s.clone(), ln_w, ln_b, lx_w, lx_b, k_mix, v_mix, r_mix, g_mix,
        decay.reshape(H, N, 1), u.reshape(H, N, 1), kw, vw, rw, gw, torch.eye(C), *([None] * 20),
    )  # fmt: skip
    xx = F.layer_norm(x, (C,), weight=ln_w, bias=ln_b)
    sxx = torch.cat((sx[None], xx[:-1]))
    r, k, v = ((xx * m + sxx * (1 - m)) @ W for m, W in ((r_mix, rw), (k_mix, kw), (v_mix, vw)))
    g = F.silu((xx * g_mix + sxx * (1 - g_mix)) @ gw)
    y, st = ov.v5_wkv(
        r.numpy(), k.numpy(), v.numpy(), g.numpy(), decay.numpy(), u.numpy(), lx_w.numpy(),
        lx_b.numpy(), s.transpose(-1, -2).numpy()[None], [T], H, EPS,
    )  # fmt: skip
    np.testing.assert_allclose(y, (out - x).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(st[0], s2.transpose(-1, -2).numpy(), rtol=1e-5, atol=1e-5)


def test_oracle_matches_official_v6_0(monkeypatch):
    """Guards the numpy oracle (dynamic decay): same numbers as the official ``att_seq_v6_0``."""
    torch, mod = ov.official_rwkv(monkeypatch)
    F = torch.nn.functional
    rng = np.random.default_rng(22)
    H, N, T, D, DD = 2, 16, 5, 8, 12
    C = H * N

    def rnd(*shape, sc=1.0):
        return _t32(torch, rng.standard_normal(shape) * sc)

    x, sx, s = rnd(T, C), rnd(C), rnd(H, N, N, sc=0.5)
    ln_w, ln_b = _t32(torch, rng.uniform(0.5, 1.5, C)), rnd(C, sc=0.1)
    lx_w, lx_b = _t32(torch, rng.uniform(0.5, 1.5, C)), rnd(C, sc=0.1)
    x_maa, w_maa, k_maa, v_maa, r_maa, g_maa = (_t32(torch, rng.uniform(0, 1, C)) for _ in range(6))
    tm_w1, tm_w2 = rnd(C, 5 * D, sc=0.3), rnd(5, D, C, sc=0.3)
    td_w1, td_w2 = rnd(C, DD, sc=0.3), rnd(DD, C, sc=0.3)
    t_decay = _t32(torch, rng.uniform(-5, 1, C))
    u = rnd(C, sc=0.5)
    kw, vw, rw, gw = (rnd(C, C, sc=C**-0.5) for _ in range(4))
    out, _, s2 = mod.RWKV.att_seq_v6_0(
        None, x, sx, s.clone(), ln_w, ln_b, lx_w, lx_b, x_maa, w_maa, k_maa, v_maa, r_maa, g_maa,
        tm_w1, tm_w2, td_w1, td_w2, t_decay.reshape(H, N, 1), u.reshape(H, N, 1),
        kw, vw, rw, gw, torch.eye(C), *([None] * 20),
    )  # fmt: skip
    xx = F.layer_norm(x, (C,), weight=ln_w, bias=ln_b)
    sxx = torch.cat((sx[None], xx[:-1])) - xx
    xxx = torch.tanh((xx + sxx * x_maa) @ tm_w1).view(T, 5, -1).transpose(0, 1)
    mw, mk, mv, mr, mg = torch.bmm(xxx, tm_w2).view(5, T, -1).unbind(0)
    wx, kx, vx, rx, gx = (
        xx + sxx * (m + d)
        for m, d in ((w_maa, mw), (k_maa, mk), (v_maa, mv), (r_maa, mr), (g_maa, mg))
    )
    w_plane = torch.tanh(wx @ td_w1) @ td_w2
    w = ov.v6_decay(t_decay.numpy(), w_plane.numpy())
    y, st = ov.v5_wkv(
        (rx @ rw).numpy(), (kx @ kw).numpy(), (vx @ vw).numpy(), F.silu(gx @ gw).numpy(), w,
        u.numpy(), lx_w.numpy(), lx_b.numpy(), s.transpose(-1, -2).numpy()[None], [T], H, EPS,
    )  # fmt: skip
    np.testing.assert_allclose(y, (out - x).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(st[0], s2.transpose(-1, -2).numpy(), rtol=1e-5, atol=1e-5)


def test_report_max_errors():
    """Not a check: prints the worst relative errors seen above (run with -s to see them)."""
    for name, err in sorted(MAX_ERR.items()):
        print(f"{name}: {err:.3g}")


@pytest.mark.parametrize("adapter_type", ["CPU", "DiscreteGPU"])
def test_both_recurrence_entries(device, monkeypatch, adapter_type):
    """On an adapter with subgroups, CPU adapters record the barrier-free `wkv_lanes` and other
    adapters `wkv`; both against the oracle (odd head size, uneven slots)."""
    import dataclasses

    if not device.info.subgroup:
        pytest.skip("adapter without subgroups: only `wkv` exists there")
    monkeypatch.setattr(device, "info", dataclasses.replace(device.info, adapter_type=adapter_type))
    g = Graph(device)
    time_mix_v5(g, Counter(device, "n"), device.storage(64), device.storage(4096), device.storage(256),
                device.storage(4096), device.storage(1024), c=48, heads=2, plane=256, slots=2,
                dynamic_decay=True, gated=False, offsets={"decay": 0, "u": 0, "lnw": 0, "lnb": 0}, eps=EPS)  # fmt: skip
    lanes = device.pipelines.get("time_mix_v5_lanes", "wkv_lanes", N_HEAD=24)
    assert (g.items[0].pipeline is lanes) == (adapter_type == "CPU")
    check(device, 2, 24, ODD_LENS, True, True, seed=400)


@pytest.mark.parametrize("heads,n", [(1, 1), (2, 6), (3, 16), (1, 24), (2, 40), (2, 64)])
@pytest.mark.parametrize(
    "dynamic,gated", MODES, ids=["static", "static-gated", "dynamic", "dynamic-gated"]
)
def test_decode(device, heads, n, dynamic, gated):
    """`decode` (wkv and norm in one dispatch, one token per slot) against the oracle."""
    check(device, heads, n, [1, 0, 1, 1], dynamic, gated, seed=heads * 100 + n + 2 * dynamic + gated, decode=True)
    check(device, heads, n, [1], dynamic, gated, seed=7 + n, decode=True)


@pytest.mark.parametrize("heads,n,d", [(1, 1, 8), (2, 6, 9), (3, 16, 64), (1, 24, 30), (2, 64, 128), (1, 64, 256)])
def test_decode_with_decay_lora(device, heads, n, d):
    """RWKV-6's decay LoRA second half computed inside `decode` (kernel time_mix_v6): the same
    result as the w plane holding its output."""
    c = heads * n
    for lens, seed in (([1, 0, 1, 1], n + d), ([1], 3 * d)):
        raw, vec, state, tmax = make_case(heads, n, lens, seed, True, True)
        rng = np.random.default_rng(seed + 1)
        w2 = (rng.standard_normal((c, d)) / np.sqrt(d)).astype(np.float16)
        hid = rng.standard_normal((tmax, d + 5)).astype(np.float32)
        raw["w"] = (hid[:, 2 : 2 + d].astype(np.float64) @ w2.astype(np.float64).T).astype(np.float32)
        y, st = run_v5(device, heads, n, lens, raw, vec, state, tmax, True, True, seed, decode=True, lora=(w2, hid, 2))
        t = sum(lens)
        y_ref, s_ref = reference(raw, vec, state, lens, heads, True, True)
        close("v6.lora.y", y[:t], y_ref)
        np.testing.assert_array_equal(y[t:], SENTINEL)
        close("v6.lora.state", st, s_ref)


def test_decay_lora_limits(device):
    """Where `decode` cannot read the second half it is not fused (the product stays)."""
    from rwkv_webgpu.gpu import Act, upload_matrix
    from rwkv_webgpu.ops.time_mix_v5 import MAX_DW, decay_lora

    hid = Act(device.upload(np.zeros(8 * MAX_DW, np.float32), "hid"), MAX_DW + 8, MAX_DW + 8, 0, 4)
    assert decay_lora(upload_matrix(device, np.zeros((16, MAX_DW + 8), np.float16), "w2"), hid, 16) is None
    assert decay_lora(upload_matrix(device, np.zeros((8, 64), np.float16), "w2"), hid, 16) is None  # not C rows
    assert decay_lora(upload_matrix(device, np.zeros((16, 64), np.float16), "w2"), hid, 16) is not None
