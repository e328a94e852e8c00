"""Generate text with the bundled demo model: streaming, a stop string, a result object, a chat.

    python examples/generate.py [--adapter vulkan]

Runs only when the demo model (rwkv_webgpu/demo/rwkv7-demo.pth + tokenizer.json) is in this
checkout; otherwise it says how to get it and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import rwkv_webgpu as rw
from rwkv_webgpu.chat import Chat

DEMO = Path(rw.__file__).resolve().parent / "demo"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--adapter", help="adapter filter, e.g. vulkan")
    ap.add_argument("--max-tokens", type=int, default=40)
    args = ap.parse_args()
    model_path, tok_path = DEMO / "rwkv7-demo.pth", DEMO / "tokenizer.json"
    if not (model_path.is_file() and tok_path.is_file()):
        print(f"The demo model is not in this checkout ({model_path}).\n"
              "Train it with `python scripts/train_demo_model.py`, or point rwkv_webgpu.load_model at any\n"
              "RWKV checkpoint (e.g. RWKV-x070-World-0.1B.pth, with the World tokenizer chosen automatically).")  # fmt: skip
        return 0

    model = rw.load_model(model_path, tokenizer=tok_path, adapter=args.adapter)
    print(f"{model.info.describe()} on {model.device.info.describe()}\n")
    cfg = rw.SamplingConfig(temperature=0.9, top_p=0.8, frequency_penalty=0.3, seed=1)

    print("-- streaming")
    prompt = "The Python interpreter"
    print(prompt, end="")
    for delta in rw.generate_stream(model, prompt, sampling=cfg, max_tokens=args.max_tokens):
        print(delta, end="", flush=True)
    print("\n")

    print("-- a stop string and the result object")
    result = rw.generate(model, "A list is", sampling=cfg, max_tokens=args.max_tokens, stop=["."],
                         return_result=True)  # fmt: skip
    print(f"A list is{result.text}  [{result.finish_reason}, {result.completion_tokens} tokens]\n")

    print("-- greedy: the same text every time")
    print(
        rw.generate(model, "def ", sampling=rw.SamplingConfig(temperature=0), max_tokens=20), "\n"
    )

    print("-- chat (the demo model is trained on documentation, not conversations)")
    chat = Chat(model, sampling=cfg, max_tokens=args.max_tokens)
    print("User: What is a dictionary?\nAssistant:", chat.send("What is a dictionary?"))
    print("User: And a tuple?\nAssistant:", chat.send("And a tuple?"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
