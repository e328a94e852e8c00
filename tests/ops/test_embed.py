"""The embedding gather (shaders/embed.wgsl) against numpy indexing: f16 and f32 tables, odd
widths, tables split over several bindings, and a view with an offset and a stride."""

from __future__ import annotations

import numpy as np
import pytest

from rwkv_webgpu.errors import GPUMemoryError
from rwkv_webgpu.gpu import Act, Counter, Graph
from rwkv_webgpu.ops.embed import embed_rows, upload_table


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("v,c,max_part", [(97, 64, None), (101, 7, None), (53, 33, 33 * 4 * 20), (30, 5, 20 * 10)])
def test_gather_matches_numpy(device, dtype, v, c, max_part):
    rng = np.random.default_rng(v * c)
    emb = rng.standard_normal((v, c)).astype(dtype)
    if max_part is not None and dtype == np.float16:
        max_part //= 2  # half the bytes per row: split as often as the f32 case
    table = upload_table(device, emb, max_part_bytes=max_part)
    if max_part is not None:
        assert len(table.parts) > 1
    ids = np.array([v - 1, 0, 3, v // 2, v - 1, 1, 2], np.uint32)
    stride, off = c + 3, 2
    out = device.storage((len(ids) * stride + off) * 4)
    g, n = Graph(device), Counter(device, "n")
    embed_rows(g, n, device.upload(ids), table, Act(out, c, stride, off, len(ids)))
    n.set(len(ids) - 1)  # the last id is past the step's count: its row stays zero
    g.run()
    got = device.read(out, np.float32)[off : off + len(ids) * stride].reshape(len(ids), stride)
    want = emb[ids].astype(np.float32)
    np.testing.assert_array_equal(got[:-1, :c], want[:-1])  # exact: f16 -> f32 loses nothing
    assert not got[-1].any() and not got[:, c:].any()


def test_table_too_large_for_four_bindings_is_a_clear_error(device):
    emb = np.zeros((50, 4), np.float32)
    with pytest.raises(GPUMemoryError, match="bindings"):
        upload_table(device, emb, max_part_bytes=16 * 10)
