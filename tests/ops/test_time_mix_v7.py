"""RWKV-7 time-mix kernels (prepare, wkv) against the float64 numpy oracle of the official math."""

import numpy as np
import oracles
import oracles_v4v5 as ov
import pytest

from rwkv_webgpu.gpu import Counter, Graph
from rwkv_webgpu.ops import time_mix_v7_prepare, time_mix_v7_wkv
from rwkv_webgpu.ops.time_mix_v7 import v7_params

PLANES = ("r", "w", "k", "v", "kk", "a", "g")
VEC = ("w0", "a0", "v0", "k_k", "k_a", "r_k", "lnw", "lnb")
EPS = 64e-5
SENTINEL = 4321.0
MAX_ERR: dict[str, float] = {}  # worst error relative to the output's magnitude, per check


def close(name, got, want, tol=1e-4):
    """|got - want| <= tol * max(1, max|want|) everywhere."""
    want = np.asarray(want, np.float64)
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    err = float(np.abs(got - want).max() / scale) if want.size else 0.0
    MAX_ERR[name] = max(MAX_ERR.get(name, 0.0), err)
    assert err <= tol, f"{name}: max error {err:.3g} x {scale:.3g} > {tol}"


def make_case(heads, n, lens, seed, extra=2):
    rng = np.random.default_rng(seed)
    c = heads * n
    t = sum(lens)
    tmax = t + extra
    raw = {
        "r": rng.standard_normal((tmax, c)),
        "w": rng.standard_normal((tmax, c)) * 1.5,
        "k": rng.standard_normal((tmax, c)),
        "v": rng.standard_normal((tmax, c)),
        "kk": rng.standard_normal((tmax, c)),  # junk: prepare overwrites it
        "a": rng.standard_normal((tmax, c)),
        "g": rng.standard_normal((tmax, c)),
    }
    raw = {k: v.astype(np.float32) for k, v in raw.items()}
    vec = {
        "w0": rng.uniform(-2, 1, c),
        "a0": rng.standard_normal(c) * 0.5,
        "v0": rng.standard_normal(c) * 0.5,
        "k_k": rng.uniform(0.5, 1.5, c),
        "k_a": rng.uniform(0, 1, c),
        "r_k": rng.standard_normal(c) * 0.3,
        "lnw": rng.uniform(0.5, 1.5, c),
        "lnb": rng.standard_normal(c) * 0.1,
    }
    vec = {k: v.astype(np.float32) for k, v in vec.items()}
    vgate = rng.standard_normal((tmax, c)).astype(np.float32)
    v_first = rng.standard_normal((tmax, c)).astype(np.float32)
    state = (rng.standard_normal((len(lens), heads, n, n)) * 0.5).astype(np.float32)
    return raw, vec, vgate, v_first, state, tmax


def pack_vec(vec, c, rng):
    """All vectors in one buffer, at irregular offsets with junk between them."""
    parts, offsets, pos = [], {}, 0
    for name in VEC:
        gap = int(rng.integers(1, 5))
        parts.append(rng.standard_normal(gap).astype(np.float32))
        pos += gap
        offsets[name] = pos
        parts.append(vec[name])
        pos += c
    return np.concatenate(parts), offsets


class Run:
    """Buffers for one case on the device; ``go`` records prepare and/or wkv and runs them."""

    def __init__(
        self, device, heads, n, lens, raw, vec, vgate, v_first, state, tmax, layer0, seed=0
    ):
        self.device, self.heads, self.lens = device, heads, lens
        rng = np.random.default_rng(seed + 7)
        c = heads * n
        self.plane = tmax * c + 3  # planes need not be packed tightly
        tm = np.zeros((7, self.plane), np.float32)
        for j, name in enumerate(PLANES):
            tm[j, : tmax * c] = raw[name].reshape(-1)
            tm[j, tmax * c :] = SENTINEL
        self.tm0 = tm
        packed, offsets = pack_vec(vec, c, rng)
        self.params = v7_params(
            c=c, h=heads, plane=self.plane, slots=len(lens), layer0=layer0, offsets=offsets, eps=EPS
        )
        cur = np.concatenate([oracles.cursors(lens), np.full(tmax - sum(lens), 999, np.uint32)])
        self.bufs = {
            "cursors": device.upload(cur, "cursors"),
            "tm": device.upload(tm, "tm"),
            "vgate": device.upload(vgate, "vgate"),
            "v_first": device.upload(v_first, "v_first"),
            "vec": device.upload(packed, "vec"),
            "state": device.upload(state, "state"),
            "y": device.upload(np.full((tmax, c), SENTINEL, np.float32), "y"),
        }
        self.c, self.tmax = c, tmax

    def go(self, prepare=True, wkv=True, count=None):
        b, d = self.bufs, self.device
        g = Graph(d)
        cnt = Counter(d, "n")
        if prepare:
            time_mix_v7_prepare(
                g, cnt, self.params, b["tm"], b["vgate"], b["v_first"], b["vec"], heads=self.heads
            )
        if wkv:
            time_mix_v7_wkv(
                g,
                cnt,
                self.params,
                b["cursors"],
                b["tm"],
                b["vec"],
                b["state"],
                b["y"],
                heads=self.heads,
                slots=len(self.lens),
            )
        cnt.set(sum(self.lens) if count is None else count)
        g.run()

    def read(self, name, shape):
        return self.device.read(self.bufs[name])[: int(np.prod(shape))].reshape(shape)


LENS = [[3, 0, 1, 5], [0, 4], [2], [1, 1, 0]]
SHAPES = [
    (1, 1),
    (3, 1),
    (1, 16),
    (2, 16),
    (3, 16),
    (1, 32),
    (2, 32),
    (3, 32),
    (1, 64),
    (2, 64),
    (3, 64),
]


@pytest.mark.parametrize("heads,n", SHAPES)
@pytest.mark.parametrize("layer0", [True, False])
def test_prepare(device, heads, n, layer0):
    lens = [2, 0, 3]
    seed = heads * 100 + n + layer0
    raw, vec, vgate, v_first, state, tmax = make_case(heads, n, lens, seed)
    run = Run(device, heads, n, lens, raw, vec, vgate, v_first, state, tmax, layer0, seed)
    run.go(wkv=False)
    t, c = sum(lens), heads * n
    tm = run.read("tm", (7, run.plane))
    ref = oracles.v7_prepare(
        {k: v[:t] for k, v in raw.items()}, vec, vgate[:t], v_first[:t], heads, layer0
    )
    for j, name in enumerate(PLANES):
        got = tm[j, : t * c].reshape(t, c)
        if name in ("r", "g"):
            np.testing.assert_array_equal(got, raw[name][:t])  # untouched
        else:
            close(f"prepare.{name}", got, ref[name], tol=2e-6)
        # rows >= t of every plane untouched
        np.testing.assert_array_equal(tm[j, t * c :], run.tm0[j, t * c :])
    vf = run.read("v_first", (tmax, c))
    close("prepare.v_first", vf[:t], ref["v_first"], tol=2e-6)
    np.testing.assert_array_equal(vf[t:], v_first[t:])
    if layer0:  # layer 0 keeps v and stores it as v_first
        np.testing.assert_array_equal(vf[:t], raw["v"][:t])
    else:
        np.testing.assert_array_equal(vf[:t], v_first[:t])
    np.testing.assert_array_equal(
        run.read("state", state.shape), state
    )  # prepare does not touch state
    np.testing.assert_array_equal(run.read("y", (tmax, c)), SENTINEL)


def check_wkv(device, heads, n, lens, layer0, seed):
    raw, vec, vgate, v_first, state, tmax = make_case(heads, n, lens, seed)
    run = Run(device, heads, n, lens, raw, vec, vgate, v_first, state, tmax, layer0, seed)
    run.go()
    t, c = sum(lens), heads * n
    p = oracles.v7_prepare(
        {k: v[:t] for k, v in raw.items()}, vec, vgate[:t], v_first[:t], heads, layer0
    )
    y_ref, s_ref = oracles.v7_wkv(p, vec, state, lens, heads, EPS)
    y = run.read("y", (tmax, c))
    close("wkv.y", y[:t], y_ref)
    np.testing.assert_array_equal(y[t:], SENTINEL)  # rows beyond the counter untouched
    st = run.read("state", state.shape)
    close("wkv.state", st, s_ref)
    for b, cnt in enumerate(lens):
        if cnt == 0:  # an empty slot's state is bit-for-bit unchanged
            np.testing.assert_array_equal(st[b], state[b])


@pytest.mark.parametrize("heads,n", SHAPES)
@pytest.mark.parametrize("lens", LENS, ids=lambda l: "-".join(map(str, l)))
@pytest.mark.parametrize("layer0", [True, False])
def test_prepare_then_wkv(device, heads, n, lens, layer0):
    check_wkv(device, heads, n, lens, layer0, seed=heads * 1000 + n * 10 + len(lens) + layer0)


def test_wkv_long_sequence(device):
    """Enough tokens per slot for the state to matter a lot."""
    check_wkv(device, 2, 64, [17, 0, 9], False, seed=5)


# Head sizes leaving padding rows in the last workgroup of 16 rows (24, 40) or a partial group of
# 4 columns (6; 1 above); a slot spanning several staged blocks of 8 tokens, slots of every size.
@pytest.mark.parametrize("n", [6, 24, 40])
def test_wkv_odd_head_sizes_and_uneven_slots(device, n):
    check_wkv(device, 2, n, [70, 0, 13, 1, 8, 9], False, seed=400 + n)


def test_wkv_matches_prepared_inputs(device):
    """wkv alone on inputs already in kernel form (w in (0.545, 1), unit kk, a in (0, 1))."""
    heads, n, lens = 2, 32, [3, 0, 4]
    raw, vec, vgate, v_first, state, tmax = make_case(heads, n, lens, seed=11)
    t, c = sum(lens), heads * n
    p = oracles.v7_prepare(
        {k: v[:t] for k, v in raw.items()}, vec, vgate[:t], v_first[:t], heads, False
    )
    ready = dict(raw)
    for name in PLANES:
        ready[name] = np.concatenate([p[name], raw[name][t:]]).astype(np.float32)
    run = Run(device, heads, n, lens, ready, vec, vgate, v_first, state, tmax, False)
    run.go(prepare=False)
    y_ref, s_ref = oracles.v7_wkv({k: ready[k][:t] for k in PLANES}, vec, state, lens, heads, EPS)
    close("wkv.y", run.read("y", (tmax, c))[:t], y_ref)
    close("wkv.state", run.read("state", state.shape), s_ref)
    # wkv only reads tm
    np.testing.assert_array_equal(run.read("tm", (7, run.plane)), run.tm0)


def test_zero_tokens_is_a_no_op(device):
    heads, n, lens = 2, 16, [0, 0]
    raw, vec, vgate, v_first, state, tmax = make_case(heads, n, lens, seed=3, extra=3)
    run = Run(device, heads, n, lens, raw, vec, vgate, v_first, state, tmax, True)
    run.go()
    np.testing.assert_array_equal(run.read("state", state.shape), state)
    np.testing.assert_array_equal(run.read("tm", (7, run.plane)), run.tm0)
    np.testing.assert_array_equal(run.read("v_first", v_first.shape), v_first)
    np.testing.assert_array_equal(run.read("y", (tmax, heads * n)), SENTINEL)


def test_head_size_limit():
    with pytest.raises(ValueError):
        v7_params(
            c=130, h=1, plane=130, slots=1, layer0=False, offsets={k: 0 for k in VEC}, eps=EPS
        )


@pytest.mark.parametrize("layer0", [True, False])
def test_oracle_matches_official_rwkv(monkeypatch, layer0):
    """Guards the numpy oracle itself: same numbers as the official code (float32) on a random layer."""
    torch, official = ov.official_rwkv(monkeypatch, v7=True)
    tmix = official.RWKV_x070_TMix_seq
    rng = np.random.default_rng(17 + layer0)
    H, N, T, D = 3, 16, 5, 8
    C = H * N

    def t32(a):
        return torch.tensor(np.asarray(a), dtype=torch.float32)

    def rnd(*shape, sc=1.0):
        return t32(rng.standard_normal(shape) * sc)

    x, x_prev, v_first, state = rnd(T, C), rnd(C), rnd(T, C), rnd(H, N, N, sc=0.5)
    mus = [t32(rng.uniform(0, 1, C)) for _ in range(6)]
    w0, a0, v0, r_k, lnb = rnd(C), rnd(C), rnd(C), rnd(C, sc=0.3), rnd(C, sc=0.1)
    w1, a1, v1, g1 = (rnd(C, D, sc=0.3) for _ in range(4))
    w2, a2, v2, g2 = (rnd(D, C, sc=0.3) for _ in range(4))
    k_k, k_a, lnw = (
        t32(rng.uniform(0.5, 1.5, C)),
        t32(rng.uniform(0, 1, C)),
        t32(rng.uniform(0.5, 1.5, C)),
    )
    Rm, Km, Vm = (rnd(C, C, sc=C**-0.5) for _ in range(3))
    out, _, st, vf = tmix(
        0 if layer0 else 1, H, N, x, x_prev, v_first, state.clone(), *mus, w0, w1, w2, a0, a1, a2, v0, v1, v2,
        g1, g2, k_k, k_a, r_k, Rm, Km, Vm, torch.eye(C), lnw, lnb,
    )  # fmt: skip
    xx = torch.cat((x_prev[None], x[:-1])) - x
    xr, xw, xk, xv, xa, xg = (x + xx * m for m in mus)
    raw = {
        "r": xr @ Rm, "w": torch.tanh(xw @ w1) @ w2, "k": xk @ Km, "v": xv @ Vm,
        "a": xa @ a1 @ a2, "g": torch.sigmoid(xg @ g1) @ g2,
    }  # fmt: skip
    raw = {k: v.numpy() for k, v in raw.items()}
    vec = {"w0": w0, "a0": a0, "v0": v0, "k_k": k_k, "k_a": k_a, "r_k": r_k, "lnw": lnw, "lnb": lnb}
    vec = {k: v.numpy() for k, v in vec.items()}
    p = oracles.v7_prepare(raw, vec, (xv @ v1 @ v2).numpy(), v_first.numpy(), H, layer0)
    y, s = oracles.v7_wkv(p, vec, state.numpy()[None], [T], H, EPS)
    np.testing.assert_allclose(y, out.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s[0], st.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p["v_first"], vf.numpy(), rtol=1e-6, atol=1e-6)


def test_report_max_errors():
    """Not a check: prints the worst relative errors seen above (run with -s to see them)."""
    for name, err in sorted(MAX_ERR.items()):
        print(f"{name}: {err:.3g}")


# ---- `decode`: LoRA second halves + prepare + wkv + norm in one dispatch (one token per slot)

LORA_D = {"w": 24, "a": 16, "v": 13, "g": 72}  # widths: a partial group of 8 (13); 72: a run of 8 words and one more


def check_decode(device, heads, n, lens, layer0, seed):
    """`decode` against the oracle: raw w, a, vgate, g are the LoRA products of random f16 weights."""
    from rwkv_webgpu.gpu import Act, upload_matrices
    from rwkv_webgpu.ops import time_mix_v7_decode
    from rwkv_webgpu.ops.time_mix_v7 import decode_lora

    raw, vec, _, v_first, state, tmax = make_case(heads, n, lens, seed)
    rng = np.random.default_rng(seed + 1)
    c, t = heads * n, sum(lens)
    names = [m for m in LORA_D if not (layer0 and m == "v")]
    ws = {m: (rng.standard_normal((c, LORA_D[m])) / 4).astype(np.float16) for m in names}
    mats = dict(zip(names, upload_matrices(device, [ws[m] for m in names], names)))
    hw = sum(LORA_D.values()) + 5  # a row of hid: the four inputs side by side, then junk
    hid = rng.standard_normal((tmax, hw)).astype(np.float32)
    at, inputs = 0, {}
    for m, d in LORA_D.items():
        if m in names:
            inputs[m] = Act(None, d, hw, at, tmax)
        at += d
    lora = decode_lora(mats, inputs, c)
    assert lora is not None
    prod = {m: hid[:, inputs[m].offset : inputs[m].offset + LORA_D[m]].astype(np.float64) @ ws[m].T.astype(np.float64)
            for m in names}  # fmt: skip
    run = Run(device, heads, n, lens, raw, vec, np.zeros((tmax, c), np.float32), v_first, state, tmax, layer0, seed)
    offsets = pack_vec(vec, c, np.random.default_rng(seed + 7))[1]
    params = v7_params(c=c, h=heads, plane=run.plane, slots=len(lens), layer0=layer0, offsets=offsets, eps=EPS, lora=lora)
    hid_buf = device.upload(hid, "hid")
    g, cnt = Graph(device), Counter(device, "n")
    b = run.bufs
    time_mix_v7_decode(g, cnt, params, b["cursors"], b["tm"], b["v_first"], b["vec"], b["state"], b["y"], hid_buf, lora,
                       heads=heads, slots=len(lens))  # fmt: skip
    cnt.set(t)
    g.run()
    ins = {k: v[:t] for k, v in raw.items()}
    ins.update({"w": prod["w"][:t], "a": prod["a"][:t], "g": prod["g"][:t]})
    vg = prod["v"][:t] if "v" in prod else np.zeros((t, c))
    p = oracles.v7_prepare(ins, vec, vg, v_first[:t], heads, layer0)
    y_ref, s_ref = oracles.v7_wkv(p, vec, state, lens, heads, EPS)
    y = run.read("y", (tmax, c))
    close("decode.y", y[:t], y_ref)
    np.testing.assert_array_equal(y[t:], SENTINEL)
    st = run.read("state", state.shape)
    close("decode.state", st, s_ref)
    for s, cnt_s in enumerate(lens):
        if cnt_s == 0:
            np.testing.assert_array_equal(st[s], state[s])
    vf = run.read("v_first", (tmax, c))
    close("decode.v_first", vf[:t], p["v_first"], tol=2e-6)
    np.testing.assert_array_equal(vf[t:], v_first[t:])
    np.testing.assert_array_equal(run.read("tm", (7, run.plane)), run.tm0)  # tm is only read


@pytest.mark.parametrize("heads,n", [(1, 1), (2, 6), (3, 16), (1, 24), (2, 40), (2, 64)])
@pytest.mark.parametrize("layer0", [True, False])
def test_decode(device, heads, n, layer0):
    check_decode(device, heads, n, [1, 0, 1, 1], layer0, seed=heads * 100 + n + layer0)


def test_decode_single_slot_and_no_tokens(device):
    check_decode(device, 2, 64, [1], False, seed=9)
    check_decode(device, 2, 32, [0, 0], False, seed=10)


def test_decode_lora_needs_one_buffer(device):
    """Matrices `decode` cannot read together give None (the model then keeps the four kernels)."""
    from rwkv_webgpu.gpu import Act, upload_matrix
    from rwkv_webgpu.ops.time_mix_v7 import decode_lora

    w = np.ones((8, 4), np.float16)
    mats = {"w": upload_matrix(device, w, "w"), "a": upload_matrix(device, w, "a")}
    inputs = {"w": Act(None, 4, 8, 0, 1), "a": Act(None, 4, 8, 4, 1)}
    assert decode_lora(mats, inputs, 8) is None
