"""RWKV-4 time-mix kernel (the (aa, bb, pp) WKV) against the float64 numpy oracle."""

import numpy as np
import oracles
import oracles_v4v5 as ov
import pytest

from rwkv_webgpu.gpu import Counter, Graph
from rwkv_webgpu.ops import time_mix_v4

SENTINEL = 4321.0
EMPTY_PP = -1e30  # the official initial pp
MAX_ERR: dict[str, float] = {}  # worst error relative to the output's magnitude, per check


def close(name, got, want, tol=1e-4):
    """|got - want| <= tol * max(1, max|want|) everywhere (and got is finite)."""
    want = np.asarray(want, np.float64)
    assert np.isfinite(got).all(), f"{name}: non-finite values"
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    err = float(np.abs(got - want).max() / scale) if want.size else 0.0
    MAX_ERR[name] = max(MAX_ERR.get(name, 0.0), err)
    assert err <= tol, f"{name}: max error {err:.3g} x {scale:.3g} > {tol}"


def make_case(c, lens, seed, k_range=None, fresh=(), extra=2):
    """Random inputs; ``k_range`` (lo, hi) draws k uniformly there (large k), else N(0, 1).
    Slots in ``fresh`` start from the official empty state (0, 0, -1e30)."""
    rng = np.random.default_rng(seed)
    tmax = sum(lens) + extra
    r = rng.uniform(0, 1, (tmax, c))  # already sigmoid(r)
    if k_range is None:
        k = rng.standard_normal((tmax, c))
    else:
        k = rng.uniform(*k_range, (tmax, c))
    v = rng.standard_normal((tmax, c))
    w = -np.exp(rng.uniform(-5, 1.5, c))  # -exp(time_decay)
    u = rng.uniform(-1, 3, c)  # time_first
    b = len(lens)
    state = np.stack(
        [rng.standard_normal((b, c)), rng.uniform(0.5, 2, (b, c)), rng.uniform(-3, 3, (b, c))],
        axis=1,
    )
    for s in fresh:
        state[s] = np.array([0.0, 0.0, EMPTY_PP])[:, None]
    f32 = lambda a: a.astype(np.float32)
    return f32(r), f32(k), f32(v), f32(w), f32(u), f32(state), tmax


def run_v4(device, c, lens, r, k, v, w, u, state, tmax, count=None, seed=0):
    rng = np.random.default_rng(seed + 1)
    plane = tmax * c + 3  # planes need not be packed tightly
    tm = np.full((3, plane), SENTINEL, np.float32)
    for j, a in enumerate((r, k, v)):
        tm[j, : tmax * c] = a.reshape(-1)
    w_off = int(rng.integers(1, 6))
    u_off = w_off + c + int(rng.integers(0, 4))
    vec = rng.standard_normal(u_off + c + 3).astype(np.float32)  # junk around w and u
    vec[w_off : w_off + c] = w
    vec[u_off : u_off + c] = u
    cur = np.concatenate([oracles.cursors(lens), np.full(tmax - sum(lens), 999, np.uint32)])
    bufs = {
        "cursors": device.upload(cur, "cursors"),
        "tm": device.upload(tm, "tm"),
        "vec": device.upload(vec, "vec"),
        "state": device.upload(state, "state"),
        "y": device.upload(np.full((tmax, c), SENTINEL, np.float32), "y"),
    }
    g = Graph(device)
    cnt = Counter(device, "n")
    time_mix_v4(
        g, cnt, bufs["cursors"], bufs["tm"], bufs["vec"], bufs["state"], bufs["y"],
        c=c, plane=plane, slots=len(lens), w_off=w_off, u_off=u_off,
    )  # fmt: skip
    cnt.set(sum(lens) if count is None else count)
    g.run()
    y = device.read(bufs["y"])[: tmax * c].reshape(tmax, c)
    st = device.read(bufs["state"])[: state.size].reshape(state.shape)
    np.testing.assert_array_equal(
        device.read(bufs["tm"])[: tm.size].reshape(tm.shape), tm
    )  # read-only
    return y, st


def check(device, c, lens, seed, k_range=None, fresh=(), tol=1e-4):
    r, k, v, w, u, state, tmax = make_case(c, lens, seed, k_range, fresh)
    y, st = run_v4(device, c, lens, r, k, v, w, u, state, tmax, seed=seed)
    t = sum(lens)
    y_ref, s_ref = ov.v4_wkv(r[:t], k[:t], v[:t], w, u, state, lens)
    close("v4.y", y[:t], y_ref, tol)
    np.testing.assert_array_equal(y[t:], SENTINEL)  # rows beyond the counter untouched
    for b, n in enumerate(lens):
        if n == 0:  # an empty slot's state is bit-for-bit unchanged (pp = -1e30 included)
            np.testing.assert_array_equal(st[b], state[b])
        else:
            close("v4.aa", st[b, 0], s_ref[b, 0], tol)
            close("v4.bb", st[b, 1], s_ref[b, 1], tol)
            close("v4.pp", st[b, 2], s_ref[b, 2], tol)
    return y, st


LENS = [[3, 0, 1, 5], [0, 4], [2], [1, 1, 0], [17, 0, 9]]


@pytest.mark.parametrize("c", [1, 37, 130])
@pytest.mark.parametrize("lens", LENS, ids=lambda l: "-".join(map(str, l)))
def test_wkv(device, c, lens):
    check(device, c, lens, seed=c * 100 + len(lens) + sum(lens), fresh=(0,))


@pytest.mark.parametrize(
    "k_range", [(30, 80), (-80, 80), (70, 110)], ids=["k30-80", "k-80-80", "k70-110"]
)
@pytest.mark.parametrize("fresh", [(), (0, 1, 2)], ids=["warm", "fresh"])
def test_large_k_no_overflow(device, k_range, fresh):
    """exp(k) alone overflows f32 for k > 88.7 (and sums of exp(k) sooner): the (aa, bb, pp)
    form must not."""
    c, lens = 67, [6, 0, 11]
    _y, st = check(device, c, lens, seed=42 + len(fresh), k_range=k_range, fresh=fresh)
    # pp tracks the running max of k (it is at least the last token's k)
    t_end = np.cumsum(lens) - 1
    _, k, *_ = make_case(c, lens, 42 + len(fresh), k_range, fresh)
    for b, n in enumerate(lens):
        if n:
            assert (st[b, 2] >= k[t_end[b]]).all()


def test_fresh_state_first_token(device):
    """From (0, 0, -1e30) the first token's output is exactly r * v (e1 = 0, e2 = 1)."""
    c, lens = 45, [1, 3]
    r, k, v, w, u, state, tmax = make_case(c, lens, 7, fresh=(0, 1))
    y, st = run_v4(device, c, lens, r, k, v, w, u, state, tmax)
    np.testing.assert_allclose(y[0], r[0] * v[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(y[1], r[1] * v[1], rtol=1e-6, atol=1e-7)
    # after one token: aa = v, bb = 1, pp = k
    np.testing.assert_allclose(st[0], np.stack([v[0], np.ones(c), k[0]]), rtol=1e-6, atol=1e-7)


def test_zero_tokens_is_a_no_op(device):
    c, lens = 33, [0, 0]
    r, k, v, w, u, state, tmax = make_case(c, lens, 3, extra=3)
    y, st = run_v4(device, c, lens, r, k, v, w, u, state, tmax)
    np.testing.assert_array_equal(st, state)
    np.testing.assert_array_equal(y, SENTINEL)


def test_oracle_matches_official_rwkv(monkeypatch):
    """Guards the numpy oracle itself: same numbers as the official ``att_seq`` (float32)."""
    torch, mod = ov.official_rwkv(monkeypatch)
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    T, C = 7, 24

    def t32(a):
        return torch.tensor(np.asarray(a), dtype=torch.float32)

    x, sx = t32(rng.standard_normal((T, C))), t32(rng.standard_normal(C))
    ln_w, ln_b = t32(rng.uniform(0.5, 1.5, C)), t32(rng.standard_normal(C) * 0.1)
    k_mix, v_mix, r_mix = (t32(rng.uniform(0, 1, C)) for _ in range(3))
    t_decay = -torch.exp(t32(rng.uniform(-5, 1.5, C)))
    t_first = t32(rng.uniform(-1, 3, C))
    kw, vw, rw = (t32(rng.standard_normal((C, C)) * 3) for _ in range(3))  # large k
    for aa, bb, pp in [
        (torch.zeros(C), torch.zeros(C), torch.full((C,), EMPTY_PP)),
        (t32(rng.standard_normal(C)), t32(rng.uniform(0.5, 2, C)), t32(rng.uniform(-3, 3, C))),
    ]:
        out, _, aa2, bb2, pp2 = mod.RWKV.att_seq(
            None, x, sx, aa, bb, pp, ln_w, ln_b, k_mix, v_mix, r_mix, t_decay, t_first,
            kw, vw, rw, torch.eye(C), *([None] * 16),
        )  # fmt: skip
        xx = F.layer_norm(x, (C,), weight=ln_w, bias=ln_b)
        sxx = torch.cat((sx[None], xx[:-1]))
        r = torch.sigmoid((xx * r_mix + sxx * (1 - r_mix)) @ rw)
        k = (xx * k_mix + sxx * (1 - k_mix)) @ kw
        v = (xx * v_mix + sxx * (1 - v_mix)) @ vw
        state = torch.stack([aa, bb, pp])[None].numpy()
        y, s = ov.v4_wkv(
            r.numpy(), k.numpy(), v.numpy(), t_decay.numpy(), t_first.numpy(), state, [T]
        )
        assert np.abs(k.numpy()).max() > 20
        np.testing.assert_allclose(y, (out - x).numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s[0, 0], aa2.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s[0, 1], bb2.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s[0, 2], pp2.numpy(), rtol=1e-6, atol=1e-5)


def test_report_max_errors():
    """Not a check: prints the worst relative errors seen above (run with -s to see them)."""
    for name, err in sorted(MAX_ERR.items()):
        print(f"{name}: {err:.3g}")
