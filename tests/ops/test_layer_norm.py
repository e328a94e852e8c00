"""layer_norm (row layer norm and per-group norm) against a float64 numpy reference."""

import numpy as np
import oracles
import pytest

from rwkv_webgpu.gpu import Act, Counter, Graph
from rwkv_webgpu.ops import layer_norm

SENTINEL = -1234.5


def run_layer_norm(
    device, x, w, b, *, t, eps, group=None, x_off=0, x_pad=0, y_off=0, y_pad=0, w_off=0, gap=0
):
    """x: [tmax, C] rows written into a strided view; the counter says ``t`` rows.

    Returns the whole y buffer (to check what lies outside the view too) and the y view.
    """
    rng = np.random.default_rng(99)
    tmax, c = x.shape
    xs, ys = c + x_pad, c + y_pad
    xbuf = rng.standard_normal(x_off + tmax * xs).astype(np.float32)  # junk around the rows
    for r in range(tmax):
        xbuf[x_off + r * xs : x_off + r * xs + c] = x[r]
    xa = Act(device.upload(xbuf, "x"), c, xs, x_off, tmax)
    ya = Act(
        device.upload(np.full(y_off + tmax * ys, SENTINEL, np.float32), "y"), c, ys, y_off, tmax
    )
    b_off = w_off + c + gap
    vec = rng.standard_normal(b_off + c + 3).astype(np.float32)
    vec[w_off : w_off + c] = w
    vec[b_off : b_off + c] = b
    g = Graph(device)
    cnt = Counter(device, "n")
    layer_norm(g, cnt, xa, ya, device.upload(vec, "vec"), w_off, b_off, eps=eps, group_size=group)
    cnt.set(t)
    g.run()
    return device.read(ya.buffer)[: y_off + tmax * ys], (y_off, ys)


def check(
    device,
    c,
    t,
    *,
    group=None,
    eps=1e-5,
    x_off=0,
    x_pad=0,
    y_off=0,
    y_pad=0,
    w_off=0,
    gap=0,
    extra=2,
    shift=0.0,
):
    rng = np.random.default_rng(c * 100 + t + (group or 0))
    tmax = t + extra
    x = (rng.standard_normal((tmax, c)) * 2 + shift).astype(np.float32)
    w = rng.standard_normal(c).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    ybuf, (yo, ys) = run_layer_norm(
        device,
        x,
        w,
        b,
        t=t,
        eps=eps,
        group=group,
        x_off=x_off,
        x_pad=x_pad,
        y_off=y_off,
        y_pad=y_pad,
        w_off=w_off,
        gap=gap,
    )
    want = np.full_like(ybuf, SENTINEL)
    ref = oracles.layer_norm(x[:t], w, b, eps, group)
    mask = np.zeros(ybuf.shape, bool)
    for r in range(t):
        want[yo + r * ys : yo + r * ys + c] = ref[r]
        mask[yo + r * ys : yo + r * ys + c] = True
    # everything outside the t rows of the view (offset gap, row padding, rows >= t) is untouched
    np.testing.assert_array_equal(ybuf[~mask], want[~mask])
    scale = max(1.0, float(np.abs(ref).max())) if t else 1.0
    np.testing.assert_allclose(ybuf[mask], want[mask], rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("c", [1, 3, 37, 64, 100, 257])
@pytest.mark.parametrize("t", [1, 2, 7])
def test_layer_norm_rows(device, c, t):
    check(device, c, t)


@pytest.mark.parametrize("c,t", [(1, 3), (37, 5), (64, 2), (257, 4)])
def test_layer_norm_views_and_offsets(device, c, t):
    """x and y are views at nonzero offsets with row padding; weight/bias inside a larger vec."""
    check(device, c, t, x_off=5, x_pad=3, y_off=11, y_pad=7, w_off=13, gap=2, extra=3, shift=5.0)


@pytest.mark.parametrize(
    "heads,n", [(1, 1), (5, 1), (3, 3), (2, 37), (4, 16), (2, 64), (3, 100), (1, 257)]
)  # fmt: skip
@pytest.mark.parametrize("t", [1, 6])
def test_group_norm(device, heads, n, t):
    check(device, heads * n, t, group=n, eps=64e-5, x_off=2, x_pad=1, y_off=3, w_off=4, gap=1)


def test_rows_beyond_counter_untouched(device):
    """The counter sets how many rows are normalized; zero rows writes nothing."""
    check(device, 37, 0, extra=4)
    check(device, 37, 3, extra=9)


def test_eps_is_used(device):
    """A constant row has zero variance: the output is exactly the bias, eps keeps it finite."""
    c = 10
    x = np.full((2, c), 3.0, np.float32)
    w = np.arange(c, dtype=np.float32)
    b = np.linspace(-1, 1, c).astype(np.float32)
    ybuf, _ = run_layer_norm(device, x, w, b, t=2, eps=1e-5)
    np.testing.assert_allclose(ybuf.reshape(2, c), np.tile(b, (2, 1)), atol=1e-6)


@pytest.mark.parametrize("c", [2048, 4099])
@pytest.mark.parametrize("case", ["outlier_first", "far_mean", "outlier_channels"])
def test_statistics_stay_accurate(device, c, case):
    """Rows whose mean lies far from their values' spread, whose first value is an outlier or
    with a few huge channels lose no more than f32 rounding (the sums of the two passes)."""
    rng = np.random.default_rng(c)
    x = rng.standard_normal((2, c))
    if case == "outlier_first":
        x[:, 0] = 500.0
    elif case == "far_mean":
        x += 1e4
    else:  # a few huge channels, as RWKV's residual stream has
        x[:, [5, 700, c - 1]] = [300.0, -250.0, 400.0]
    x = x.astype(np.float32)
    w = rng.uniform(0.5, 1.5, c).astype(np.float32)
    b = np.zeros(c, np.float32)
    ybuf, (yo, ys) = run_layer_norm(device, x, w, b, t=2, eps=1e-5)
    got = np.stack([ybuf[yo + r * ys : yo + r * ys + c] for r in range(2)])
    xs = x.astype(np.float64)
    mean = xs.mean(-1, keepdims=True)
    want = (xs - mean) / np.sqrt(((xs - mean) ** 2).mean(-1, keepdims=True) + 1e-5) * w
    # far_mean: the f32 mean of values near 1e4 is itself rounded by ~1e-3 (in any f32 layer norm)
    tol = 1e-3 if case == "far_mean" else 2e-5
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())
