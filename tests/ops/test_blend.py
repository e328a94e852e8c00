"""blend.add_mul (y += a * b over packed [T, C] views at offsets) against numpy."""

import numpy as np
import oracles_v4v5 as ov
import pytest

from rwkv_webgpu.errors import ShapeError
from rwkv_webgpu.gpu import Act, Counter, Graph, act_buffer
from rwkv_webgpu.ops import add_mul

SENTINEL = 777.25


def run_add_mul(device, c, rows, count, offs, seed, same_ab=False):
    """a, b, y are [rows, c] views at element offsets offs = (a_off, b_off, y_off) of buffers
    padded with junk before and after. With ``same_ab`` a and b live in one buffer."""
    rng = np.random.default_rng(seed)
    a_off, b_off, y_off = offs
    a = rng.standard_normal((rows, c)).astype(np.float32)
    b = rng.standard_normal((rows, c)).astype(np.float32)
    y = rng.standard_normal((rows, c)).astype(np.float32)
    tail = 5
    if same_ab:  # both planes in one buffer: a at a_off, b at b_off (>= a_off + rows * c)
        ab = np.full(b_off + rows * c + tail, SENTINEL, np.float32)
        ab[a_off : a_off + rows * c] = a.reshape(-1)
        ab[b_off : b_off + rows * c] = b.reshape(-1)
        abuf = bbuf = device.upload(ab, "ab")
    else:
        abuf = device.upload(
            np.concatenate(
                [np.full(a_off, SENTINEL), a.reshape(-1), np.full(tail, SENTINEL)]
            ).astype(np.float32),
            "a",
        )
        bbuf = device.upload(
            np.concatenate(
                [np.full(b_off, SENTINEL), b.reshape(-1), np.full(tail, SENTINEL)]
            ).astype(np.float32),
            "b",
        )
    y0 = np.concatenate([np.full(y_off, SENTINEL), y.reshape(-1), np.full(tail, SENTINEL)]).astype(
        np.float32
    )
    ybuf = device.upload(y0, "y")
    g = Graph(device)
    cnt = Counter(device, "n")
    add_mul(
        g,
        cnt,
        Act(abuf, c, c, a_off, rows),
        Act(bbuf, c, c, b_off, rows),
        Act(ybuf, c, c, y_off, rows),
    )
    cnt.set(count)
    g.run()
    got = device.read(ybuf)[: y0.size]
    return a, b, y, y0, got


@pytest.mark.parametrize("c", [1, 37, 64, 131])
@pytest.mark.parametrize("count,rows", [(1, 3), (5, 5), (4, 9)])
@pytest.mark.parametrize("offs", [(0, 0, 0), (3, 17, 6)], ids=["packed", "offsets"])
def test_add_mul(device, c, count, rows, offs):
    a, b, y, _y0, got = run_add_mul(
        device, c, rows, count, offs, seed=c * 10 + count + rows + offs[1]
    )
    y_off = offs[2]
    head, body, tail = (
        got[:y_off],
        got[y_off : y_off + rows * c].reshape(rows, c),
        got[y_off + rows * c :],
    )
    ref = ov.add_mul(y[:count], a[:count], b[:count])
    np.testing.assert_allclose(body[:count], ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(body[count:], y[count:])  # rows beyond count untouched
    np.testing.assert_array_equal(head, SENTINEL)  # nothing before y_off written
    np.testing.assert_array_equal(tail, SENTINEL)


def test_add_mul_same_buffer_planes(device):
    """a and b as two planes of one buffer (bound twice, read-only)."""
    c, rows, count = 45, 4, 3
    offs = (2, 2 + rows * c + 7, 1)
    a, b, y, _y0, got = run_add_mul(device, c, rows, count, offs, seed=9, same_ab=True)
    body = got[1 : 1 + rows * c].reshape(rows, c)
    np.testing.assert_allclose(
        body[:count], ov.add_mul(y[:count], a[:count], b[:count]), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_array_equal(body[count:], y[count:])


def test_add_mul_accumulates(device):
    """Two recorded add_muls on the same y add up (read-modify-write, in order)."""
    c, rows = 37, 3
    rng = np.random.default_rng(4)
    a, b, y = (rng.standard_normal((rows, c)).astype(np.float32) for _ in range(3))
    ab, bb, yb = device.upload(a, "a"), device.upload(b, "b"), device.upload(y, "y")
    g = Graph(device)
    cnt = Counter(device, "n")
    for _ in range(2):
        add_mul(g, cnt, Act(ab, c, c), Act(bb, c, c), Act(yb, c, c))
    cnt.set(rows)
    g.run()
    got = device.read(yb)[: rows * c].reshape(rows, c)
    np.testing.assert_allclose(got, y + 2 * a.astype(np.float64) * b, rtol=1e-6, atol=1e-6)


def test_zero_count_is_a_no_op(device):
    _a, _b, _y, y0, got = run_add_mul(device, 19, 3, 0, (1, 2, 3), seed=1)
    np.testing.assert_array_equal(got, y0)


def test_shape_errors(device):
    a = act_buffer(device, 2, 8, "a")
    g, cnt = Graph(device), Counter(device, "n")
    with pytest.raises(ShapeError):  # column counts differ
        add_mul(g, cnt, a, Act(a.buffer, 4, 4), a)
    with pytest.raises(ShapeError):  # a strided (non-packed) view
        add_mul(g, cnt, Act(a.buffer, 8, 16), a, a)
