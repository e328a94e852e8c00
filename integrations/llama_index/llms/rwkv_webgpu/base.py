"""``RWKVWebGPU``: a llama-index LLM over a local RWKV model on WebGPU."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from rwkv_webgpu.plugins.serving import Outcome, Request, ServedModel, chat_stops, served_model
from rwkv_webgpu.sampling import SamplingConfig


def _usage(out: Outcome) -> dict[str, Any]:
    return {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
            "total_tokens": out.prompt_tokens + out.completion_tokens, "cached_tokens": out.cached_tokens,
            "finish_reason": out.finish_reason}  # fmt: skip


class RWKVWebGPU(CustomLLM):
    """An RWKV model running locally on any WebGPU adapter.

    ``complete`` continues the prompt as it is; ``chat`` writes the messages in the RWKV World chat
    format (``User: ...\\n\\nAssistant:``) and stops at the end of the assistant's turn. The model
    loads on first use and is shared (one engine and prefix cache) with every other object,
    LangChain's included, that names it. Instrumentation events come from llama-index's callbacks.
    """

    model: str = Field(default="demo", description="A checkpoint path or a registered model name.")
    tokenizer: str | None = Field(
        default=None, description="tokenizer.json / vocab file / 'world'."
    )
    adapter: str | None = Field(default=None, description="WebGPU adapter filter ('vulkan', ...).")
    quant: str | dict[str, str] | None = Field(
        default=None, description="Quantization at load: 'int8', 'nf4', 'sf4' or a mix {'att': 'int8', 'ffn': 'nf4'}."
    )
    temperature: float = Field(default=1.0, ge=0)
    top_p: float = Field(default=0.3, gt=0, le=1)
    top_k: int = Field(default=0, ge=0)
    seed: int | None = None
    max_tokens: int = Field(default=256, ge=0, description="Most tokens to generate.")
    stop: list[str] = Field(default_factory=list, description="Stop strings, never emitted.")
    sampler: str = Field(
        default="default", description="A sampler registered by an rwkv_webgpu plugin."
    )
    context_window: int = Field(
        default=8192, description="Reported to llama-index (RWKV itself has no limit)."
    )

    @classmethod
    def class_name(cls) -> str:
        return "RWKVWebGPU"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.context_window, num_output=self.max_tokens,
                           is_chat_model=True, model_name=self.model)  # fmt: skip

    def _served(self) -> ServedModel:
        return served_model(self.model, tokenizer=self.tokenizer, adapter=self.adapter, quant=self.quant)

    def _request(self, ids: list[int], stops: Sequence[str], kwargs: dict[str, Any]) -> Request:
        sampling = SamplingConfig(temperature=kwargs.get("temperature", self.temperature),
                                  top_p=kwargs.get("top_p", self.top_p), top_k=kwargs.get("top_k", self.top_k),
                                  seed=kwargs.get("seed", self.seed))  # fmt: skip
        return Request(ids, max_tokens=kwargs.get("max_tokens", self.max_tokens), sampling=sampling,
                       stop=tuple(dict.fromkeys([*stops, *self.stop, *kwargs.get("stop", [])])),
                       sampler=kwargs.get("sampler", self.sampler))  # fmt: skip

    def _completion(
        self, prompt: str, formatted: bool, kwargs: dict[str, Any]
    ) -> tuple[ServedModel, Request]:
        served = self._served()
        text = (
            prompt
            if formatted or self.completion_to_prompt is None
            else self.completion_to_prompt(prompt)
        )
        return served, self._request(served.encode(text), (), kwargs)

    def _chat(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> tuple[ServedModel, Request]:
        served = self._served()
        turns = [(m.role.value, m.content or "") for m in messages]
        return served, self._request(served.chat_ids(turns), chat_stops(), kwargs)

    # -- completion ----------------------------------------------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        served, req = self._completion(prompt, formatted, kwargs)
        gen = served.start(req)
        text = "".join(gen)
        return CompletionResponse(text=text, additional_kwargs=_usage(gen.outcome))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        served, req = self._completion(prompt, formatted, kwargs)

        def gen() -> CompletionResponseGen:
            run = served.start(req)
            text = ""
            try:
                for piece in run:
                    text += piece
                    yield CompletionResponse(text=text, delta=piece)
            finally:
                run.close()
            yield CompletionResponse(text=text, delta="", additional_kwargs=_usage(run.outcome))

        return gen()

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        served, req = await asyncio.to_thread(self._completion, prompt, formatted, kwargs)
        pieces, done = await served.astart(req)
        text = "".join([p async for p in pieces])
        return CompletionResponse(text=text, additional_kwargs=_usage(done()))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        served, req = await asyncio.to_thread(self._completion, prompt, formatted, kwargs)

        async def gen() -> CompletionResponseAsyncGen:
            pieces, done = await served.astart(req)
            text = ""
            async for piece in pieces:
                text += piece
                yield CompletionResponse(text=text, delta=piece)
            yield CompletionResponse(text=text, delta="", additional_kwargs=_usage(done()))

        return gen()

    # -- chat ------------------------------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        served, req = self._chat(messages, kwargs)
        gen = served.start(req)
        text = "".join(gen)
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
                            additional_kwargs=_usage(gen.outcome))  # fmt: skip

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        served, req = self._chat(messages, kwargs)

        def gen() -> ChatResponseGen:
            run = served.start(req)
            text = ""
            try:
                for piece in run:
                    text += piece
                    yield ChatResponse(
                        message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=piece
                    )
            finally:
                run.close()
            yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta="",
                               additional_kwargs=_usage(run.outcome))  # fmt: skip

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        served, req = await asyncio.to_thread(self._chat, messages, kwargs)
        pieces, done = await served.astart(req)
        text = "".join([p async for p in pieces])
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
                            additional_kwargs=_usage(done()))  # fmt: skip

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        served, req = await asyncio.to_thread(self._chat, messages, kwargs)

        async def gen() -> ChatResponseAsyncGen:
            pieces, done = await served.astart(req)
            text = ""
            async for piece in pieces:
                text += piece
                yield ChatResponse(
                    message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=piece
                )
            yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta="",
                               additional_kwargs=_usage(done()))  # fmt: skip

        return gen()
