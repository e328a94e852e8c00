"""What ChatRWKV, RWKV and RWKVEmbeddings share: the model fields, lazy loading of the shared
served model, sampling settings and plugin events as LangChain callbacks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import dispatch_custom_event
from pydantic import BaseModel, ConfigDict, Field

from rwkv_webgpu.plugins import listening
from rwkv_webgpu.plugins.serving import Request, ServedModel, served_model
from rwkv_webgpu.sampling import SamplingConfig

PROVIDER = "rwkv_webgpu"


class ModelFields(BaseModel):
    """Which model, loaded on first use and shared by every object naming the same one."""

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())

    model_name: str = Field(default="demo", alias="model")
    """A checkpoint path or a registered model name ("demo": the bundled demo model)."""
    tokenizer: str | None = None
    """A tokenizer.json or vocab file, or "world"; None: the model's own or the World tokenizer."""
    adapter: str | None = None
    """WebGPU adapter filter ("vulkan", "nvidia", ...); None picks the high-performance one."""
    max_batch: int = 4
    """Requests the shared engine runs at once (set by whoever loads the model first)."""
    quant: str | dict[str, str] | None = None
    """Store the large matrices quantized: "int8", "nf4", "sf4" or a mix such as
    {"att": "int8", "ffn": "nf4"} (see docs/quantization.md); None keeps them f16."""

    def served(self, model: str | None = None) -> ServedModel:
        """The shared served model (``model`` overrides this object's for one call)."""
        return served_model(model or self.model_name, tokenizer=self.tokenizer, adapter=self.adapter,
                            max_batch=self.max_batch, quant=self.quant)  # fmt: skip


def _relay(run_manager: Any = None, config: Any = None) -> Any:
    """A listener passing plugin events on as LangChain custom events ``rwkv_webgpu.<event>``:
    to ``run_manager``'s run, else to the run of ``config`` or the current context, if any."""
    if run_manager is not None and hasattr(run_manager, "get_sync"):
        run_manager = run_manager.get_sync()  # async run managers: handlers are called in sync form

    def relay(event: str, data: dict[str, Any]) -> None:
        name = f"rwkv_webgpu.{event}"
        if run_manager is not None:
            run_manager.get_child().on_custom_event(name, data, run_id=run_manager.run_id)
            return
        try:
            dispatch_custom_event(name, data, config=config)
        except RuntimeError:  # outside any LangChain run: there is no one to tell
            pass

    return relay


@contextlib.contextmanager
def events_as_callbacks(run_manager: Any = None, config: Any = None) -> Iterator[None]:
    """Deliver plugin events emitted in this context (state saved/loaded, model hooks fired) as
    LangChain custom events."""
    with listening(_relay(run_manager, config)):
        yield


class StateMethods(ModelFields):
    """Save and resume conversation states: text (or token ids) -> state file -> prefix cache."""

    def save_state(self, prompt: str | list[int], path: str, *, config: Any = None) -> str:
        """Save the state after ``prompt`` to ``path`` (plus ``path.json``); emits ``state_saved``."""
        served = self.served()
        ids = served.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        with events_as_callbacks(config=config):
            return served.save_state(ids, path)

    def load_state(self, path: str, *, config: Any = None) -> list[int]:
        """Load a saved state into the shared prefix cache, so a prompt starting with its tokens
        continues from it; returns the tokens. Emits ``state_loaded``."""
        with events_as_callbacks(config=config):
            return self.served().load_state(path)


class GenerationFields(StateMethods):
    """Generation settings: RWKV's sampler options, limits and stop strings."""

    temperature: float = 1.0
    top_p: float = 0.3
    top_k: int = 0
    min_p: float = 0.0
    typical_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_decay: float = 0.996
    seed: int | None = None
    max_tokens: int = 256
    stop: list[str] | None = None
    """Stop strings, matched literally while decoding; the text ends right before one."""
    sampler: str = "default"
    """A sampler registered by a plugin (``register_samplers``)."""
    stop_at_eos: bool = True
    """End at the model's end-of-text token."""

    def sampling(self, **overrides: Any) -> SamplingConfig:
        names = ("temperature", "top_p", "top_k", "min_p", "typical_p", "presence_penalty",
                 "frequency_penalty", "penalty_decay", "seed")  # fmt: skip
        values = {n: overrides.get(n, getattr(self, n)) for n in names}
        return SamplingConfig(**values)

    def request(self, prompt: list[int], stop: list[str] | None, extra_stop: tuple[str, ...] = (),
                **kwargs: Any) -> Request:  # fmt: skip
        stops = tuple(dict.fromkeys([*(self.stop or []), *(stop or []), *extra_stop]))
        return Request(
            prompt,
            max_tokens=int(kwargs.get("max_tokens", self.max_tokens)),
            sampling=self.sampling(**kwargs),
            stop=stops,
            sampler=kwargs.get("sampler", self.sampler),
            stop_at_eos=self.stop_at_eos,
        )

    def params(self) -> dict[str, Any]:
        """The settings that identify this object's outputs (for caching and tracing)."""
        names = ("temperature", "top_p", "top_k", "min_p", "typical_p", "presence_penalty",
                 "frequency_penalty", "penalty_decay", "seed", "max_tokens", "stop", "sampler")  # fmt: skip
        return {"model": self.model_name, **{n: getattr(self, n) for n in names}}
