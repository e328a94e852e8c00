"""Random-weight checkpoints of real RWKV shapes, for benchmarks (values are noise; speed is not).

    python benchmarks/random_model.py v6-1.6b /tmp/v6.safetensors

Writes official tensor names in f16 safetensors, one tensor at a time (little memory), with a
small pool of random numbers reused across tensors so even 3 B-parameter files take seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rwkv_webgpu.config import ModelInfo, Version
from rwkv_webgpu.weights.detect import expected_shapes
from rwkv_webgpu.weights.safetensors_io import TensorSpec, write_safetensors

SHAPES: dict[str, ModelInfo] = {
    # L24 C2048 V65536: the 1.5B/1.6B World models
    "v6-1.6b": ModelInfo(Version.V6, 24, 2048, 32, 64, 65536, 7168,
                         lora_ranks=(("time_maa", 32), ("time_decay", 64))),
    "v7-1.5b": ModelInfo(Version.V7, 24, 2048, 32, 64, 65536, 8192,
                         lora_ranks=(("w", 96), ("a", 96), ("v", 64), ("g", 256))),
    "v7-2.9b": ModelInfo(Version.V7, 32, 2560, 40, 64, 65536, 10240,
                         lora_ranks=(("w", 96), ("a", 96), ("v", 64), ("g", 320))),
    # small shapes for the software adapter
    "v6-small": ModelInfo(Version.V6, 4, 256, 4, 64, 65536, 896,
                          lora_ranks=(("time_maa", 32), ("time_decay", 64))),
    "v7-small": ModelInfo(Version.V7, 4, 256, 4, 64, 65536, 1024,
                          lora_ranks=(("w", 32), ("a", 32), ("v", 32), ("g", 64))),
}  # fmt: skip


def _values(name: str, shape: tuple[int, ...], pool: np.ndarray, offset: int) -> np.ndarray:
    n = int(np.prod(shape))
    flat = np.resize(np.roll(pool, offset % pool.size), n)
    if len(shape) >= 2 and shape[-1] > 1 and "time_maa_w2" not in name or name.endswith("head.weight"):
        fan_in = shape[-1] if "weight" in name else shape[0]
        return (flat / np.sqrt(fan_in)).reshape(shape)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "weight" or name.endswith("ln_x.weight"):
        return (1.0 + 0.1 * flat).reshape(shape)
    if leaf == "bias":
        return (0.01 * flat).reshape(shape)
    if "decay" in leaf or leaf == "w0":
        return (-1.0 + 0.5 * flat).reshape(shape)
    if "time_first" in leaf or "time_faaaa" in leaf:
        return (0.3 * flat).reshape(shape)
    return (0.5 + 0.25 * np.tanh(flat)).reshape(shape)  # mixes and other vectors in (0.25, 0.75)


def write_random_model(kind: str, path: str | Path, seed: int = 0) -> ModelInfo:
    info = SHAPES[kind]
    shapes = expected_shapes(info)
    pool = np.random.default_rng(seed).standard_normal(1 << 22).astype(np.float32)
    specs = [TensorSpec(name, "f16", tuple(shape)) for name, shape in shapes.items()]
    offsets = {s.name: i * 7919 for i, s in enumerate(specs)}
    write_safetensors(
        str(path), specs, lambda s: _values(s.name, s.shape, pool, offsets[s.name]).astype(np.float16),
        {"format": "pt", "note": f"random {kind} for benchmarks"},
    )  # fmt: skip
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=sorted(SHAPES))
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    info = write_random_model(args.kind, args.out, args.seed)
    print(f"wrote {args.out}: {info.describe()}")


if __name__ == "__main__":
    main()
