"""Greedy completions of a column with Ray Data, the demo model loaded once per actor.

pip install "rwkv-webgpu[ray]"
python examples/ray_batch.py
"""

from __future__ import annotations

import ray

from rwkv_webgpu.serve import RWKVPredictor


def main() -> None:
    ray.init(runtime_env={"env_vars": {"XDG_RUNTIME_DIR": "/tmp"}})
    prompts = [
        f"User: Name a {thing}.\n\nAssistant:" for thing in ("fruit", "colour", "river", "poet")
    ]
    ds = ray.data.from_items([{"prompt": p} for p in prompts * 25])
    out = ds.map_batches(
        RWKVPredictor,
        fn_constructor_kwargs={
            "model": "demo",
            "max_tokens": 16,
            "temperature": 0,
            "max_batch": 16,
        },
        batch_size=50,
        concurrency=2,
        num_cpus=1,
    )
    for row in out.take(4):
        print(repr(row["prompt"]), "->", repr(row["text"]))
    ray.shutdown()


if __name__ == "__main__":
    main()
