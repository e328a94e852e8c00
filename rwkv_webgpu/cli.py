"""The `rwkv-webgpu` command. The only module that reads argv and environment variables."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RWKVError

ADAPTER_ENV = "RWKV_WEBGPU_ADAPTER"

EXAMPLES = """examples:
  rwkv-webgpu generate --prompt "The Python interpreter"          (the bundled demo model)
  rwkv-webgpu generate --model RWKV-x070-World-1.5B.pth --prompt "Hello" --max-tokens 200
  rwkv-webgpu chat --model RWKV-x070-World-1.5B.pth
  rwkv-webgpu batch --prompt "Once upon" --prompt "The capital of France is"
  rwkv-webgpu bench --model model.pth --compare web-rwkv-py
  rwkv-webgpu info model.pth
  rwkv-webgpu convert model.pth model.st
  RWKV_WEBGPU_ADAPTER=opengl rwkv-webgpu generate --prompt "Hi"   (choose an adapter)
"""

GENERATE_EXAMPLES = """examples:
  rwkv-webgpu generate --prompt "The Python interpreter"
  rwkv-webgpu generate --model RWKV-x070-World-1.5B.pth --prompt "Q: Why is the sky blue?\\n\\nA:" \\
      --stop "\\n\\n" --temperature 0.8 --top-p 0.5 --seed 1
  rwkv-webgpu generate --prompt "def fib(n):" --temperature 0                       (greedy)
  rwkv-webgpu generate --prompt "Once" --top-k 40 --min-p 0.05 --presence-penalty 0.3 --frequency-penalty 0.3
"""

CHAT_EXAMPLES = """examples:
  rwkv-webgpu chat                                          (the bundled demo model)
  rwkv-webgpu chat --model RWKV-x070-World-1.5B.pth --system "You are a concise assistant."
  rwkv-webgpu chat --model model.pth --tokenizer tokenizer.json --seed 7 --max-tokens 300

in the chat:
  +            answer the last message again (a new draw)
  + N          answer it again as with --seed N (with the chat's seed: its first answer)
  /save PATH   save the conversation (PATH: the state, PATH.json: the transcript)
  /load PATH   continue a saved conversation
  /reset       start over         /help   this list
  -            quit (also Ctrl-D)
"""

BATCH_EXAMPLES = """examples:
  rwkv-webgpu batch --prompt "Once upon a time" --prompt "The capital of France is" --max-tokens 50
  rwkv-webgpu batch --file prompts.txt --max-batch 16 --temperature 0      (one prompt per line)
"""

BENCH_EXAMPLES = """examples:
  rwkv-webgpu bench --model RWKV-x070-World-1.5B.pth                 (512-token prompt, 500 tokens)
  rwkv-webgpu bench --model RWKV-x060-World-1.6B.pth --compare web-rwkv-py --json bench.json
  rwkv-webgpu bench --model model.pth --prompt-tokens 1024 --tokens 200 --chunk-size 256
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
        self.stream.write(
            f"\r{self.what} [{bar}] {done}/{total} {label:<12.12} {time.perf_counter() - self.start:5.1f}s{end}"
        )
        self.stream.flush()


def _load(args: argparse.Namespace) -> Any:
    from .loader import load_model

    path = args.model or demo_model_path()
    if path is None:
        raise RWKVError(
            "no --model given and this install has no bundled demo model; pass --model PATH"
        )
    tokenizer = args.tokenizer
    if tokenizer is None and args.model is None:
        tokenizer = str(Path(path).with_name("tokenizer.json"))
    bar = ProgressBar("loading", force=args.progress)
    return load_model(
        path,
        adapter=args.adapter,
        token_chunk_size=args.chunk_size,
        tokenizer=tokenizer,
        progress=bar,
        quant=getattr(args, "quant", None),
    )


def _unescape(text: str) -> str:
    """``\\n``, ``\\t`` and ``\\\\`` typed on a command line, as the characters they name."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t"}.get(m[1], "\\"), text)


def _sampling(args: argparse.Namespace) -> Any:
    from .sampling import SamplingConfig

    try:
        return SamplingConfig(
            temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
            typical_p=args.typical_p, presence_penalty=args.presence_penalty,
            frequency_penalty=args.frequency_penalty, repetition_penalty=args.repetition_penalty,
            penalty_decay=args.penalty_decay, banned=args.ban or (), seed=args.seed,
        )  # fmt: skip
    except ValueError as exc:  # "SamplingConfig.top_p must be ..." -> "--top-p must be ..."
        msg = re.sub(r"SamplingConfig\.(\w+)", lambda m: "--" + m[1].replace("_", "-"), str(exc))
        raise RWKVError(msg.replace("--banned", "--ban")) from None


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate_stream

    cfg = _sampling(args)
    model = _load(args)
    prompt = _unescape(args.prompt) if args.escapes else args.prompt
    out = sys.stdout
    out.write(prompt)
    out.flush()
    t0 = time.perf_counter()
    stop = [_unescape(s) for s in args.stop or ()]
    stream = generate_stream(model, prompt, max_tokens=args.max_tokens, sampling=cfg, stop=stop)
    for piece in stream:
        out.write(piece)
        out.flush()
    out.write("\n")
    if args.verbose:
        r, dt = stream.result, time.perf_counter() - t0
        sys.stderr.write(
            f"[{r.completion_tokens} tokens ({r.finish_reason}) in {dt:.2f}s on {model.device.info.describe()}]\n"
        )
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat import Chat, repl

    cfg = _sampling(args)
    model = _load(args)
    chat = Chat(
        model, sampling=cfg, max_tokens=args.max_tokens, system=_unescape(args.system or "")
    )
    print(
        f"Chatting with {Path(getattr(model, 'path', 'the model')).name} on {model.device.info.describe()}."
    )
    print(
        "Type a message; + regenerates the last answer, /save PATH, /load PATH, /help; - quits.\n"
    )
    return repl(chat, input, sys.stdout)


def cmd_batch(args: argparse.Namespace) -> int:
    from .runtime import Engine
    from .sampling import valid_ids

    unescape = _unescape if args.escapes else str
    prompts = [unescape(p) for p in args.prompt or ()]
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            prompts += [unescape(line.rstrip("\n")) for line in f if line.strip()]
    if not prompts:
        raise RWKVError(
            "give prompts with --prompt TEXT (repeatable) or --file FILE (one per line)"
        )
    cfg = _sampling(args)
    if cfg.has_penalties:
        sys.stderr.write(
            "note: the batching engine does not apply repetition penalties yet; ignored\n"
        )
    model = _load(args)
    if model.tokenizer is not None:  # the engine samples with sample(): ban what cannot be decoded
        cannot = np.flatnonzero(~valid_ids(model.tokenizer, model.info.num_vocab))
        cfg = cfg.replace(banned=cfg.banned | {int(i) for i in cannot})
    stop = [_unescape(s) for s in args.stop or ()]
    t0 = time.perf_counter()
    with Engine(model, max_batch=min(args.max_batch, len(prompts))) as engine:
        handles = [
            engine.submit(p, max_tokens=args.max_tokens, sampling=cfg, stop=stop) for p in prompts
        ]
        results = [h.result() for h in handles]
    dt = time.perf_counter() - t0
    for i, (prompt, r) in enumerate(zip(prompts, results), 1):
        print(
            f"--- [{i}/{len(prompts)}] {r.prompt_tokens} prompt tokens, {r.completion_tokens} generated ({r.finish_reason}) ---"
        )
        print(prompt + r.text)
    total = sum(r.prompt_tokens + r.completion_tokens for r in results)
    sys.stderr.write(
        f"{len(prompts)} prompts, {total} tokens in {dt:.2f}s ({total / dt:.1f} tok/s) on {model.device.info.describe()}\n"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.prompt_tokens < 1 or args.tokens < 0:
        raise RWKVError("--prompt-tokens must be >= 1 and --tokens >= 0")
    from .speed import bench_prompt, time_model, time_peer

    model = _load(args)
    prompt = bench_prompt(model, args.prompt_tokens, args.seed)
    runs = [time_model(model, prompt, args.tokens)]
    if args.compare:
        runs.append(time_peer(model, prompt, args.tokens, ProgressBar("converting for web-rwkv-py", force=args.progress)))
    info = model.device.info
    print(f"adapter: {info.describe()}")
    print(f"model:   {model.info.describe()}  ({model.path}{f', {model.quant}' if model.quant else ''})")
    print(
        f"prompt {len(prompt)} tokens (chunks of {model.token_chunk_size}), then {args.tokens} tokens decoded greedily"
    )
    for r in runs:
        if "skipped" in r:
            print(f"{r['engine']:<13} skipped: {r['skipped']}")
        else:
            print(
                f"{r['engine']:<13} prefill {r['prefill_tok_s']:10.1f} tok/s   decode {r['decode_tok_s']:8.1f} tok/s"
            )
    if args.json:
        doc = {"adapter": info.name, "backend": info.backend, "model": model.info.describe(), "path": str(model.path),
               "quant": str(model.quant), "prompt_tokens": len(prompt), "decode_tokens": args.tokens,
               "chunk_size": model.token_chunk_size, "runs": runs}  # fmt: skip
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .loader import open_model_file
    from .weights.detect import detect

    with open_model_file(args.path) as ckpt:
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
    from .loader import open_model_file
    from .weights.convert import convert
    from .weights.detect import detect
    from .weights.prefab import save_prefab
    from .weights.quant import QuantPlan

    bar = ProgressBar("converting", force=args.progress)
    quant = QuantPlan.parse(args.quant)
    changes = bool(quant) or bool(args.lora)
    prefab = args.format == "prefab" or (args.format is None and (changes or not args.dst.endswith(".st")))
    if not prefab:
        convert(args.src, args.dst, progress=bar)
    else:
        from .weights.lora import LoraSpec

        loras = [LoraSpec(path, alpha=args.lora_alpha) for path in args.lora or ()]
        with open_model_file(args.src, loras) as ckpt:
            info = detect(ckpt)
            layers = range(args.quant_layers) if args.quant_layers is not None else None
            save_prefab(ckpt, args.dst, quant=quant, quant_layers=layers, num_layer=info.num_layer, progress=bar)
    print(f"wrote {args.dst} ({f'prefab, {quant}' if prefab else 'web-rwkv .st'})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .inspector import format_table, layer_stats, plot_png

    model = _load(args)
    if model.tokenizer is None:
        raise RWKVError("this model has no tokenizer: pass --tokenizer")
    rows = layer_stats(model, model.tokenizer.encode(args.prompt))
    print(f"{model.info.describe()} on {model.device.info.describe()}")
    print(format_table(rows))
    if args.plot:
        plot_png(rows, args.plot)
        print(f"wrote {args.plot}")
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
        print(
            f"{a.info['device']} | {a.info['backend_type']} | {a.info['adapter_type']} | {', '.join(feats) or '-'} | binding {lim:.0f} MiB"
        )
    return 0


QUANT_HELP = (
    "store the large att/FFN matrices as int8, nf4 or sf4; or a mix per block or matrix, "
    "e.g. att=int8,ffn=nf4 (keys: att, ffn, att.key, ffn.value, ...)"
)


def _command(sub: Any, name: str, summary: str, examples: str, func: Any) -> Any:
    """A subcommand that loads a model: --model, --tokenizer, --chunk-size, --progress."""
    p = sub.add_parser(name, help=summary, description=summary, epilog=examples,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "--model",
        help="checkpoint (.pth, .safetensors, web-rwkv .st); default: the bundled demo model",
    )
    p.add_argument(
        "--tokenizer",
        help='"world", a tokenizer.json or a vocab file (default: chosen from the model)',
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="tokens per GPU submission for prompts (default 1024 on GPUs, 128 on CPU adapters)",
    )
    p.add_argument("--quant", default=None, metavar="KIND", help=QUANT_HELP)
    p.add_argument(
        "--progress",
        action="store_true",
        help="show the load progress bar even when not on a terminal",
    )
    p.set_defaults(func=func)
    return p


def _add_sampling(
    g: Any, *, max_tokens: int, top_p: float, frequency: float = 0.0, stop: bool = True
) -> None:
    g.add_argument(
        "--max-tokens",
        type=int,
        default=max_tokens,
        help=f"most tokens to generate (default {max_tokens})",
    )
    if stop:
        g.add_argument(
            "--stop", action="append", help="stop before this text (repeatable; \\n is a newline)"
        )
    s = g.add_argument_group("sampling")
    s.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    s.add_argument(
        "--top-p", type=float, default=top_p, help=f"nucleus sampling mass (default {top_p})"
    )
    s.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = all)")
    s.add_argument(
        "--min-p",
        type=float,
        default=0.0,
        help="drop tokens less likely than this times the top one",
    )
    s.add_argument(
        "--typical-p", type=float, default=1.0, help="locally typical sampling mass (1 = off)"
    )
    s.add_argument(
        "--presence-penalty",
        type=float,
        default=0.0,
        help="subtracted from tokens already generated",
    )
    s.add_argument("--frequency-penalty", type=float, default=frequency,
                   help=f"times a token's decayed count, subtracted (default {frequency})")  # fmt: skip
    s.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        help="divides logits of generated tokens (1 = off)",
    )
    s.add_argument(
        "--penalty-decay",
        type=float,
        default=0.996,
        help="counts decay by this each token (default 0.996)",
    )
    s.add_argument(
        "--ban", type=int, action="append", help="token id never to generate (repeatable)"
    )
    s.add_argument("--seed", type=int, default=None, help="random seed (same seed, same text)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rwkv-webgpu",
        description="Run RWKV language models on any GPU through WebGPU.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--adapter",
        default=os.environ.get(ADAPTER_ENV),
        help=f"adapter filter, e.g. vulkan, opengl, nvidia (env {ADAPTER_ENV})",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True)

    g = _command(
        sub,
        "generate",
        "generate text after a prompt (streams to stdout)",
        GENERATE_EXAMPLES,
        cmd_generate,
    )
    g.add_argument("--prompt", required=True, help="text to continue")
    g.add_argument(
        "-e",
        "--escapes",
        action="store_true",
        help="read \\n and \\t in --prompt as newline and tab",
    )
    _add_sampling(g, max_tokens=100, top_p=0.85)

    c = _command(
        sub,
        "chat",
        "chat in the RWKV World format (User: ... / Assistant: ...)",
        CHAT_EXAMPLES,
        cmd_chat,
    )
    c.add_argument("--system", help="text before the first turn (\\n is a newline)")
    _add_sampling(c, max_tokens=500, top_p=0.3, frequency=1.0, stop=False)

    b = _command(
        sub,
        "batch",
        "generate after several prompts at once (continuous batching)",
        BATCH_EXAMPLES,
        cmd_batch,
    )
    b.add_argument("--prompt", action="append", help="a prompt (repeat for more)")
    b.add_argument("--file", help="a file with one prompt per line")
    b.add_argument(
        "-e",
        "--escapes",
        action="store_true",
        help="read \\n and \\t in prompts as newline and tab",
    )
    b.add_argument(
        "--max-batch", type=int, default=8, help="most prompts generated at once (default 8)"
    )
    _add_sampling(b, max_tokens=100, top_p=0.85)

    n = _command(
        sub, "bench", "time prefill and decode (tok/s) on this adapter", BENCH_EXAMPLES, cmd_bench
    )
    n.add_argument(
        "--prompt-tokens", type=int, default=512, help="prompt length in tokens (default 512)"
    )
    n.add_argument(
        "--tokens", type=int, default=500, help="tokens to decode after it (default 500)"
    )
    n.add_argument("--seed", type=int, default=0, help="seed of the random prompt")
    n.add_argument(
        "--compare", choices=["web-rwkv-py"], help="also run this peer engine on the same model"
    )
    n.add_argument("--json", help="also write the results to this JSON file")

    i = sub.add_parser("info", help="print a checkpoint's version and sizes (no GPU needed)")
    i.add_argument("path")
    i.set_defaults(func=cmd_info)

    c = sub.add_parser(
        "convert", help="convert a checkpoint: web-rwkv's .st layout, or a quantized prefab (no torch needed)",
        epilog="examples:\n  rwkv-webgpu convert model.pth model.st                 (web-rwkv layout)\n"
        "  rwkv-webgpu convert --quant int8 model.pth model-int8.prefab  (loads without re-quantizing)\n"
        "  rwkv-webgpu convert --quant int8 --lora A.pth model.pth merged.prefab\n"
        "  rwkv-webgpu convert --quant att=int8,ffn=nf4 model.pth model-mix.prefab  (a mix)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--quant", default=None, metavar="KIND", help=QUANT_HELP + " (writes a prefab file)")
    c.add_argument("--quant-layers", type=int, default=None, help="quantize only the first N layers")
    c.add_argument("--lora", action="append", metavar="PATH", help="merge this LoRA (.pth/.st); repeat for several, in order")
    c.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: from the file, else its rank)")
    c.add_argument("--format", choices=["st", "prefab"], default=None,
                   help="default: st for a .st destination without --quant, else prefab")  # fmt: skip
    c.add_argument(
        "--progress", action="store_true", help="show the progress bar even when not on a terminal"
    )
    c.set_defaults(func=cmd_convert)

    ins = sub.add_parser("inspect", help="per-layer statistics of the hidden states (through hooks)",
                         epilog='example:\n  rwkv-webgpu inspect --prompt "The Python interpreter" --plot layers.png',
                         formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ins.add_argument("--model", help="checkpoint; default: the bundled demo model")
    ins.add_argument("--prompt", required=True, help="text to feed")
    ins.add_argument("--tokenizer", help='"world", a tokenizer.json or a vocab file')
    ins.add_argument("--plot", help="also write a PNG chart of the statistics to this path")
    ins.add_argument("--chunk-size", type=int, default=None, help="tokens per GPU submission (default: 1024 on GPUs, 128 on CPU adapters)")
    ins.add_argument("--progress", action="store_true", help="show the load progress bar even when not on a terminal")
    ins.set_defaults(func=cmd_inspect)

    a = sub.add_parser("adapters", help="list the WebGPU adapters wgpu can see")
    a.set_defaults(func=cmd_adapters)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
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
