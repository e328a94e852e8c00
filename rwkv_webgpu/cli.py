"""The `rwkv-webgpu` command. The only module that reads argv and environment variables."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from .errors import RWKVError

ADAPTER_ENV = "RWKV_WEBGPU_ADAPTER"

EXAMPLES = """examples:
  rwkv-webgpu generate --prompt "The Python interpreter"          (the bundled demo model)
  rwkv-webgpu generate --model RWKV-x070-World-1.5B.pth --prompt "Hello" --max-tokens 200
  rwkv-webgpu info model.pth
  rwkv-webgpu convert model.pth model.st
  RWKV_WEBGPU_ADAPTER=opengl rwkv-webgpu generate --prompt "Hi"   (choose an adapter)
"""


def demo_model_path() -> Path | None:
    """The small trained model shipped inside the package, if this build has it."""
    path = Path(__file__).resolve().parent / "demo" / "rwkv7-demo.pth"
    return path if path.is_file() else None


class ProgressBar:
    """A one-line progress bar on stderr (silent when stderr is not a terminal unless forced)."""

    def __init__(self, what: str, stream: Any = None, force: bool = False):
        self.what = what
        self.stream = stream or sys.stderr
        self.enabled = force or self.stream.isatty()
        self.start = time.perf_counter()

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.enabled or total <= 0:
            return
        width = 30
        filled = int(width * done / total)
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if done >= total else ""
        self.stream.write(f"\r{self.what} [{bar}] {done}/{total} {label:<12.12} {time.perf_counter() - self.start:5.1f}s{end}")
        self.stream.flush()


def _load(args: argparse.Namespace) -> Any:
    from .loader import load_model

    path = args.model or demo_model_path()
    if path is None:
        raise RWKVError("no --model given and this install has no bundled demo model; pass --model PATH")
    tokenizer = args.tokenizer
    if tokenizer is None and args.model is None:
        tokenizer = str(Path(path).with_name("tokenizer.json"))
    bar = ProgressBar("loading", force=args.progress)
    return load_model(path, adapter=args.adapter, token_chunk_size=args.chunk_size, tokenizer=tokenizer, progress=bar)


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate_stream
    from .sampling import SamplingConfig

    model = _load(args)
    cfg = SamplingConfig(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed)
    out = sys.stdout
    out.write(args.prompt)
    out.flush()
    t0 = time.perf_counter()
    n = 0
    for piece in generate_stream(model, args.prompt, max_tokens=args.max_tokens, sampling=cfg):
        out.write(piece)
        out.flush()
        n += 1
    out.write("\n")
    if args.verbose:
        dt = time.perf_counter() - t0
        sys.stderr.write(f"[{n} pieces in {dt:.2f}s on {model.device.info.describe()}]\n")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .weights import open_checkpoint
    from .weights.detect import detect

    with open_checkpoint(args.path) as ckpt:
        info = detect(ckpt)
        names = ckpt.names()
    size = os.path.getsize(args.path)
    print(f"file:        {args.path} ({size / 2**20:.1f} MiB, {len(names)} tensors)")
    print(f"version:     {info.sub_version or info.version.value}")
    print(f"layers:      {info.num_layer}")
    print(f"embedding:   {info.num_emb}")
    print(f"heads:       {info.num_head} x {info.head_size}")
    print(f"ffn:         {info.ffn_size}")
    print(f"vocabulary:  {info.num_vocab}")
    if info.lora_ranks:
        print("lora ranks:  " + ", ".join(f"{k}={v}" for k, v in info.lora_ranks))
    if info.has_time_state:
        print("time_state:  yes (state-tuned initial state)")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .weights.convert import convert

    bar = ProgressBar("converting", force=args.progress)
    convert(args.src, args.dst, progress=bar)
    print(f"wrote {args.dst}")
    return 0


def cmd_adapters(args: argparse.Namespace) -> int:
    from .gpu import list_adapters
    from .gpu.device import NO_ADAPTER_HELP

    found = list_adapters()
    if not found:
        print(NO_ADAPTER_HELP)
        return 1
    for a in found:
        feats = sorted(f for f in a.features if f in ("shader-f16", "subgroup", "timestamp-query"))
        lim = a.limits["max-storage-buffer-binding-size"] / 2**20
        print(f"{a.info['device']} | {a.info['backend_type']} | {a.info['adapter_type']} | {', '.join(feats) or '-'} | binding {lim:.0f} MiB")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rwkv-webgpu",
        description="Run RWKV language models on any GPU through WebGPU.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--adapter", default=os.environ.get(ADAPTER_ENV), help=f"adapter filter, e.g. vulkan, opengl, nvidia (env {ADAPTER_ENV})")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate text after a prompt (streams to stdout)", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    g.add_argument("--model", help="checkpoint (.pth, .safetensors, web-rwkv .st); default: the bundled demo model")
    g.add_argument("--prompt", required=True, help="text to continue")
    g.add_argument("--tokenizer", help='"world", a tokenizer.json or a vocab file (default: chosen from the model)')
    g.add_argument("--max-tokens", type=int, default=100, help="tokens to generate (default 100)")
    g.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    g.add_argument("--top-p", type=float, default=0.85, help="nucleus sampling mass (default 0.85)")
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = all)")
    g.add_argument("--seed", type=int, default=None, help="random seed (same seed, same text)")
    g.add_argument("--chunk-size", type=int, default=128, help="tokens per GPU submission for prompts")
    g.add_argument("--progress", action="store_true", help="show the load progress bar even when not on a terminal")
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("info", help="print a checkpoint's version and sizes (no GPU needed)")
    i.add_argument("path")
    i.set_defaults(func=cmd_info)

    c = sub.add_parser("convert", help="convert a checkpoint to web-rwkv's .st layout (no torch needed)")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    c.set_defaults(func=cmd_convert)

    a = sub.add_parser("adapters", help="list the WebGPU adapters wgpu can see")
    a.set_defaults(func=cmd_adapters)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # quiets Mesa's warning on headless machines
    try:
        return int(args.func(args))
    except RWKVError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
