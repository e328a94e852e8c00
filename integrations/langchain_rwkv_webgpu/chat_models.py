"""``ChatRWKV``: a LangChain chat model over a local RWKV model on WebGPU."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from rwkv_webgpu.plugins.serving import Outcome, Request, ServedModel, chat_stops

from ._common import PROVIDER, GenerationFields, events_as_callbacks

ROLES = {"human": "user", "ai": "assistant", "system": "system"}


def _turn(message: BaseMessage) -> tuple[str, str]:
    """``(role, text)`` of a message; only text content is accepted."""
    if isinstance(message.content, list):
        for block in message.content:
            kind = block.get("type") if isinstance(block, dict) else "text"
            if kind != "text":
                raise ValueError(f"ChatRWKV reads text only; got a {kind!r} content block")
    role = ROLES.get(message.type) or str(getattr(message, "role", message.type))
    return role, message.text


def usage(out: Outcome) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=out.prompt_tokens,
        output_tokens=out.completion_tokens,
        total_tokens=out.prompt_tokens + out.completion_tokens,
        input_token_details={"cache_read": out.cached_tokens},
    )


def finish_info(out: Outcome, model_id: str) -> dict[str, Any]:
    """``finish_reason`` is "stop" (a stop string or end of text) or "length"; ``rwkv_finish_reason``
    keeps the engine's reason ("stop": a stop string, "eos", "length", "cancelled")."""
    reason = "stop" if out.finish_reason in ("stop", "eos") else out.finish_reason
    return {
        "model_name": model_id,
        "finish_reason": reason,
        "rwkv_finish_reason": out.finish_reason,
    }


class ChatRWKV(GenerationFields, BaseChatModel):
    """Chat with an RWKV model running locally on any WebGPU adapter.

    ``ChatRWKV(model="RWKV-x070-World-1.5B.pth", temperature=0, max_tokens=200, stop=["\\n\\n"])``.
    The model loads on first use and is shared (one engine, one prefix cache) by every object
    naming it. Messages become the RWKV World chat format; the answer stops at the end of the
    assistant's turn, at a stop string (never emitted) or after ``max_tokens``.
    """

    streaming: bool = False
    stop_at_turn_end: bool = True
    """Stop where the assistant's turn ends (``\n\n`` and the next ``User:``); turn it off for a
    model not tuned to chat."""

    @property
    def _llm_type(self) -> str:
        return "rwkv-webgpu-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self.params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider=PROVIDER, ls_model_name=kwargs.get("model", self.model_name),
                                 ls_model_type="chat", ls_temperature=kwargs.get("temperature", self.temperature),
                                 ls_max_tokens=kwargs.get("max_tokens", self.max_tokens))  # fmt: skip
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # -- prompts -----------------------------------------------------------------------------
    def prompt_ids(
        self, messages: Sequence[BaseMessage], served: ServedModel | None = None
    ) -> list[int]:
        """The token ids fed for ``messages`` (the chat prompt, ending with ``Assistant:``)."""
        return (served or self.served()).chat_ids([_turn(m) for m in messages])

    def get_num_tokens(self, text: str) -> int:
        """Tokens of ``text`` with the model's own tokenizer."""
        return len(self.served().encode(text))

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Tokens of the chat prompt these messages make."""
        return len(self.prompt_ids(messages))

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> tuple[ServedModel, Request]:  # fmt: skip
        served = self.served(kwargs.get("model"))
        turn_end = chat_stops() if self.stop_at_turn_end else ()
        return served, self.request(self.prompt_ids(messages, served), stop, turn_end, **kwargs)

    # -- calls ---------------------------------------------------------------------------------
    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:  # fmt: skip
        served, req = self._request(messages, stop, kwargs)
        with events_as_callbacks(run_manager):
            gen = served.start(req)
            text = "".join(gen)
        return self._result(text, gen.outcome, served.model_id)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:  # fmt: skip
        served, req = await asyncio.to_thread(
            self._request, messages, stop, kwargs
        )  # loading stays off the loop
        with events_as_callbacks(run_manager):
            pieces, done = await served.astart(req)
        text = "".join([p async for p in pieces])
        return self._result(text, done(), served.model_id)

    def _result(self, text: str, out: Outcome, model_id: str) -> ChatResult:
        info = finish_info(out, model_id)
        message = AIMessage(content=text, usage_metadata=usage(out), response_metadata=info)
        gen = ChatGeneration(
            message=message, generation_info={"finish_reason": info["finish_reason"]}
        )
        return ChatResult(generations=[gen], llm_output={"model_name": model_id})

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:  # fmt: skip
        served, req = self._request(messages, stop, kwargs)
        with events_as_callbacks(run_manager):
            gen = served.start(req)
        try:
            for piece in gen:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
                if run_manager:
                    run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
        finally:
            gen.close()
        yield self._last_chunk(gen.outcome, served.model_id)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:  # fmt: skip
        served, req = await asyncio.to_thread(self._request, messages, stop, kwargs)
        with events_as_callbacks(run_manager):
            pieces, done = await served.astart(req)
        try:
            async for piece in pieces:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
                if run_manager:
                    await run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
        finally:
            await pieces.aclose()
        yield self._last_chunk(done(), served.model_id)

    def _last_chunk(self, out: Outcome, model_id: str) -> ChatGenerationChunk:
        """The closing chunk: no text, the usage and how the answer ended."""
        info = finish_info(out, model_id)
        message = AIMessageChunk(content="", usage_metadata=usage(out), response_metadata=info,
                                 chunk_position="last")  # fmt: skip
        return ChatGenerationChunk(
            message=message, generation_info={"finish_reason": info["finish_reason"]}
        )
