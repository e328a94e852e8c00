"""Simon Willison's ``llm`` plugin for rwkv-webgpu (``pip install rwkv-webgpu[llm]``).

Models: ``rwkv/<name>`` for every model the rwkv_webgpu plugins name ("demo": the bundled demo
model), plus those listed in ``rwkv-webgpu.json`` in llm's user directory
(``{"name": {"path": "model.pth", "tokenizer": null, "quant": null}}``; ``llm rwkv-webgpu add NAME
PATH [--quant att=int8,ffn=nf4]``).
``llm -m rwkv/demo "Hello" -o temperature 0 -o max_tokens 50``; ``-o raw 1`` continues plain text
instead of chatting (for models not tuned to chat, such as the demo model). A conversation (``llm -c``,
``llm chat``) goes on from the state of its previous prompt, restored from the prefix cache.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import llm
from pydantic import Field

from rwkv_webgpu.plugins import get_plugins
from rwkv_webgpu.plugins.serving import Request, chat_stops, served_model
from rwkv_webgpu.sampling import SamplingConfig

CONFIG_NAME = "rwkv-webgpu.json"
PREFIX = "rwkv/"


def config_path() -> Path:
    return Path(llm.user_dir()) / CONFIG_NAME  # type: ignore[no-untyped-call]


def configured_models() -> dict[str, dict[str, Any]]:
    """``{name: {"path": ..., "tokenizer": ...}}`` from the rwkv_webgpu plugins and the config file."""
    found: dict[str, dict[str, Any]] = {
        name: {"path": name, "tokenizer": None, "quant": None} for name in get_plugins().models()
    }
    path = config_path()
    if path.is_file():
        for name, entry in json.loads(path.read_text()).items():
            found[name] = {"path": entry["path"], "tokenizer": entry.get("tokenizer"), "quant": entry.get("quant")}
    return found


class RWKVModel(llm.Model):
    """An RWKV model on WebGPU, chatting in the RWKV World format."""

    can_stream = True

    class Options(llm.Options):
        temperature: float | None = Field(
            default=None, description="Sampling temperature; 0 is greedy", ge=0
        )
        top_p: float | None = Field(
            default=None, description="Nucleus sampling mass (default 0.3)", gt=0, le=1
        )
        top_k: int | None = Field(
            default=None, description="Keep the k most likely tokens (0: all)", ge=0
        )
        min_p: float | None = Field(
            default=None, description="Drop tokens less likely than min_p x the top one", ge=0, lt=1
        )
        typical_p: float | None = Field(
            default=None, description="Locally typical sampling mass", gt=0, le=1
        )
        presence_penalty: float | None = Field(
            default=None, description="Penalty for tokens already generated"
        )
        frequency_penalty: float | None = Field(
            default=None, description="Penalty per (decayed) occurrence"
        )
        seed: int | None = Field(default=None, description="Random seed", ge=0)
        max_tokens: int | None = Field(
            default=None, description="Most tokens to generate (default 256)", ge=0
        )
        stop: str | None = Field(
            default=None, description="A stop string (the answer ends before it)"
        )
        raw: bool | None = Field(
            default=None, description="Continue the prompt as plain text (no chat format)"
        )
        sampler: str | None = Field(
            default=None, description="A sampler registered by an rwkv_webgpu plugin"
        )

    def __init__(self, name: str, path: str, tokenizer: str | None = None, quant: str | None = None):
        self.model_id = PREFIX + name
        self.path = path
        self.tokenizer = tokenizer
        self.quant = quant

    def __str__(self) -> str:
        return f"RWKV (WebGPU): {self.model_id}"

    def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any) -> Iterator[str]:
        served = served_model(self.path, tokenizer=self.tokenizer, quant=self.quant)
        opts = prompt.options
        earlier = list(conversation.responses) if conversation is not None else []
        system = prompt.system or next((r.prompt.system for r in earlier if r.prompt.system), None)
        if opts.raw:  # plain text, each piece tokenized alone so the next turn's prefix matches
            pieces = [system or ""] + [
                t for r in earlier for t in (r.prompt.prompt or "", r.text_or_raise())
            ]
            ids = [t for piece in [*pieces, prompt.prompt or ""] for t in served.encode(piece)]
            stops: tuple[str, ...] = ()
        else:
            turns = [("system", system)] if system else []
            for r in earlier:
                turns += [("user", r.prompt.prompt or ""), ("assistant", r.text_or_raise())]
            ids = served.chat_ids([*turns, ("user", prompt.prompt or "")])
            stops = chat_stops()
        names = (
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "typical_p",
            "presence_penalty",
            "frequency_penalty",
            "seed",
        )
        sampling = {
            "top_p": 0.3,
            **{k: getattr(opts, k) for k in names if getattr(opts, k) is not None},
        }
        req = Request(ids, max_tokens=256 if opts.max_tokens is None else opts.max_tokens,
                      sampling=SamplingConfig(**sampling), stop=stops + ((opts.stop,) if opts.stop else ()),
                      sampler=opts.sampler or "default")  # fmt: skip
        gen = served.start(req)
        try:
            yield from gen
        finally:
            gen.close()
        out = gen.outcome
        response.set_usage(input=out.prompt_tokens, output=out.completion_tokens,
                           details={"cached_tokens": out.cached_tokens, "finish_reason": out.finish_reason})  # fmt: skip


@llm.hookimpl
def register_models(register: Any) -> None:
    for name, entry in configured_models().items():
        register(RWKVModel(name, entry["path"], entry["tokenizer"], entry["quant"]))


@llm.hookimpl
def register_commands(cli: Any) -> None:
    @cli.group(name="rwkv-webgpu")
    def group() -> None:
        "Models for the rwkv-webgpu plugin"

    @group.command(name="add")
    @click.argument("name")
    @click.argument("path", type=click.Path(exists=True, dir_okay=False, resolve_path=True))
    @click.option("--tokenizer", help="tokenizer.json or vocab file (default: the model's own)")
    @click.option("--quant", help="load it quantized: int8, nf4, sf4 or a mix such as att=int8,ffn=nf4")
    def add(name: str, path: str, tokenizer: str | None, quant: str | None) -> None:
        "Make the checkpoint PATH available as rwkv/NAME"
        from rwkv_webgpu.errors import RWKVError
        from rwkv_webgpu.weights.quant import QuantPlan

        try:
            QuantPlan.parse(quant)
        except RWKVError as exc:
            raise click.BadParameter(str(exc), param_hint="--quant") from None
        where = config_path()
        models = json.loads(where.read_text()) if where.is_file() else {}
        models[name] = {"path": path, "tokenizer": tokenizer, "quant": quant}
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(json.dumps(models, indent=2))
        click.echo(f"added {PREFIX}{name}")

    @group.command(name="models")
    def models() -> None:
        "List the rwkv-webgpu models"
        for name, entry in configured_models().items():
            click.echo(f"{PREFIX}{name}: {entry['path']}")
