"""Ray Data batch inference: ``map_batches(RWKVPredictor)`` over a few hundred rows gives the
same greedy outputs as the engine called directly."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray")

WORDS = ["cat", "dog", "tree", "river", "code", "music", "light", "stone", "cloud", "bread"]
ROWS = [f"The {a} and the {b}" for a in WORDS for b in WORDS] * 2  # 200 rows, 100 distinct


@pytest.fixture(scope="module")
def direct():
    """The demo model's engine in this process."""
    import rwkv_webgpu as rw
    from rwkv_webgpu.cli import demo_model_path

    path = demo_model_path()
    model = rw.load_model(path, tokenizer=str(path.with_name("tokenizer.json")), adapter="vulkan")
    engine = rw.Engine(model, max_batch=16)
    yield engine
    engine.close()


def test_map_batches_matches_the_engine(ray_local, direct):
    import rwkv_webgpu as rw
    from rwkv_webgpu.serve import RWKVPredictor

    distinct = sorted(set(ROWS))
    cfg = rw.SamplingConfig(temperature=0)
    handles = {p: direct.submit(p, max_tokens=4, sampling=cfg) for p in distinct}
    expected = {p: h.result(120).text for p, h in handles.items()}

    ds = ray_local.data.from_items([{"id": i, "prompt": p} for i, p in enumerate(ROWS)])
    out = ds.map_batches(
        RWKVPredictor,
        fn_constructor_kwargs={
            "adapter": "vulkan",
            "max_tokens": 4,
            "temperature": 0,
            "max_batch": 16,
        },
        batch_size=100,
        concurrency=2,
        num_cpus=1,
    ).take_all()
    assert len(out) == len(ROWS)
    for row in out:
        assert row["text"] == expected[row["prompt"]], row["prompt"]
        assert row["finish_reason"] in ("length", "stop", "eos")
        assert row["completion_tokens"] <= 4
    assert sorted(r["id"] for r in out) == list(range(len(ROWS)))


def test_map_batches_embeds_a_column(ray_local):
    from rwkv_webgpu.serve import RWKVPredictor

    texts = [f"text number {i}" for i in range(40)]
    ds = ray_local.data.from_items([{"doc": t} for t in texts])
    out = ds.map_batches(RWKVPredictor, fn_constructor_kwargs={"adapter": "vulkan", "mode": "embed",
                         "column": "doc"}, batch_size=20, concurrency=1, num_cpus=1).take_all()  # fmt: skip
    local = RWKVPredictor(adapter="vulkan", mode="embed", column="doc")(
        {"doc": np.array(texts[:3])}
    )
    by_text = {r["doc"]: np.asarray(r["embedding"]) for r in out}
    assert len(by_text) == len(texts)
    for t, v in zip(texts[:3], local["embedding"]):
        np.testing.assert_allclose(by_text[t], v, rtol=1e-4, atol=1e-5)
