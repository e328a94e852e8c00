"""Ray Data batch inference: a callable class for ``Dataset.map_batches`` that loads the model
once per actor and generates (or embeds) a text column.

    import ray
    from rwkv_webgpu.serve import RWKVPredictor
    ds = ray.data.from_items([{"prompt": "User: hi\\n\\nAssistant:"}] * 1000)
    out = ds.map_batches(RWKVPredictor, fn_constructor_kwargs={"max_tokens": 32, "temperature": 0},
                         concurrency=2, batch_size=64, num_cpus=1)

Every row of a batch goes into the actor's engine at once, so a batch is decoded
``max_batch`` rows at a time with continuous batching.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ..plugins.serving import served_model
from ..sampling import SamplingConfig


class RWKVPredictor:
    """Generate from (``mode="generate"``) or embed (``mode="embed"``) the ``column`` of each batch.

    Generation adds ``output_column`` (the text) and ``finish_reason``, ``prompt_tokens`` and
    ``completion_tokens``; embedding adds ``output_column`` as one ``(C,)`` float32 vector a row.
    The sampler settings are the :class:`~rwkv_webgpu.sampling.SamplingConfig` fields
    (``temperature=0`` is greedy).
    """

    def __init__(self, model: str = "demo", *, tokenizer: str | None = None, adapter: str | None = None,
                 mode: Literal["generate", "embed"] = "generate", column: str = "prompt",
                 output_column: str | None = None, max_tokens: int = 256, stop: Sequence[str] = (),
                 max_batch: int = 8, **sampling: Any):  # fmt: skip
        if mode not in ("generate", "embed"):
            raise ValueError(f"mode must be 'generate' or 'embed', got {mode!r}")
        self.served = served_model(model, tokenizer=tokenizer, adapter=adapter, max_batch=max_batch)
        self.mode = mode
        self.column = column
        self.output_column = output_column or ("text" if mode == "generate" else "embedding")
        self.max_tokens = max_tokens
        self.stop = tuple(stop)
        self.sampling = SamplingConfig(**sampling)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.column not in batch:
            raise KeyError(f"the batch has no column {self.column!r} (it has {sorted(batch)})")
        texts = [str(t) for t in batch[self.column]]
        out = dict(batch)
        if self.mode == "embed":
            out[self.output_column] = np.asarray(self.served.embed(texts), dtype=np.float32)
            return out
        engine = self.served.engine
        handles = [engine.submit(t, max_tokens=self.max_tokens, sampling=self.sampling, stop=self.stop)
                   for t in texts]  # fmt: skip
        done = [h.result() for h in handles]
        out[self.output_column] = np.array([c.text for c in done], dtype=object)
        out["finish_reason"] = np.array([c.finish_reason for c in done], dtype=object)
        out["prompt_tokens"] = np.array([c.prompt_tokens for c in done], dtype=np.int64)
        out["completion_tokens"] = np.array([c.completion_tokens for c in done], dtype=np.int64)
        return out
