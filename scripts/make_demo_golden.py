"""Golden logits of the bundled demo model from the official implementation (needs torch and
the `rwkv` package; the test suite that reads the result does not).

    python scripts/make_demo_golden.py   ->  tests/fixtures/demo_golden.npz
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    os.environ.update(RWKV_V7_ON="1", RWKV_JIT_ON="0", RWKV_CUDA_ON="0")
    import torch
    from rwkv.model import RWKV
    from tokenizers import Tokenizer

    demo = ROOT / "rwkv_webgpu" / "demo"
    tok = Tokenizer.from_file(str(demo / "tokenizer.json"))
    text = "The Python interpreter reads a module, compiles it and runs the code object."
    tokens = tok.encode(text, add_special_tokens=False).ids[:24]
    model = RWKV(str(demo / "rwkv7-demo"), strategy="cpu fp32")
    with torch.no_grad():
        logits, _ = model.forward(tokens, None, full_output=True)
    out = ROOT / "tests" / "fixtures" / "demo_golden.npz"
    np.savez_compressed(out, tokens=np.array(tokens, np.int64), logits=logits.float().numpy().astype(np.float32),
                        text=np.array(text))  # fmt: skip
    print(f"wrote {out}: {len(tokens)} tokens, logits {tuple(logits.shape)}", file=sys.stderr)


if __name__ == "__main__":
    main()
