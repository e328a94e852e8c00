"""llama-index: ``llama_index.llms.rwkv_webgpu.RWKVWebGPU`` completes, streams and chats (sync and
async) and reports through llama-index's instrumentation."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.llms.rwkv_webgpu import RWKVWebGPU
from model_under_test import is_demo, model_params


def make(**extra: Any) -> RWKVWebGPU:
    return RWKVWebGPU(**model_params(), temperature=0, max_tokens=6, **extra)


def test_metadata() -> None:
    llm = make()
    meta = llm.metadata
    assert (
        meta.model_name == model_params()["model"] and meta.is_chat_model and meta.num_output == 6
    )


def test_complete_and_stream_complete_agree() -> None:
    llm = make()
    done = llm.complete("The Python interpreter")
    assert done.text and done.additional_kwargs["completion_tokens"] <= 6
    parts = list(llm.stream_complete("The Python interpreter"))
    assert "".join(p.delta or "" for p in parts) == parts[-1].text == done.text


def test_chat_uses_the_rwkv_chat_format() -> None:
    llm = make()
    served = llm._served()
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="Be brief."),
        ChatMessage(role=MessageRole.USER, content="Hello"),
    ]
    reply = llm.chat(messages)
    assert reply.message.role == MessageRole.ASSISTANT
    expected = served.chat_ids([("system", "Be brief."), ("user", "Hello")])
    assert reply.additional_kwargs["prompt_tokens"] == len(expected)
    assert served.tokenizer.decode(expected).endswith("Assistant:") or not is_demo()
    streamed = list(llm.stream_chat(messages))
    assert streamed[-1].message.content == reply.message.content


async def test_async_variants_match() -> None:
    llm = make()
    assert (await llm.acomplete("The Python interpreter")).text == llm.complete(
        "The Python interpreter"
    ).text
    parts = [p async for p in await llm.astream_complete("The Python interpreter")]
    assert parts[-1].text == llm.complete("The Python interpreter").text
    messages = [ChatMessage(role=MessageRole.USER, content="Hello")]
    sync = llm.chat(messages).message.content
    assert (await llm.achat(messages)).message.content == sync
    chunks = [c async for c in await llm.astream_chat(messages)]
    assert chunks[-1].message.content == sync


class Recorder(BaseEventHandler):
    events: list[str] = []  # noqa: RUF012  (a pydantic field: copied per instance)

    @classmethod
    def class_name(cls) -> str:
        return "Recorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event.class_name())


def test_instrumentation_events() -> None:
    root = get_dispatcher()
    recorder = Recorder()
    root.add_event_handler(recorder)
    try:
        make().complete("Hello")
        make().chat([ChatMessage(role=MessageRole.USER, content="Hello")])
    finally:
        root.event_handlers.remove(recorder)
    for name in (
        "LLMCompletionStartEvent",
        "LLMCompletionEndEvent",
        "LLMChatStartEvent",
        "LLMChatEndEvent",
    ):
        assert name in recorder.events


def test_quantized_model() -> None:
    from rwkv_webgpu.gpu import QMatrix

    llm = make(quant="nf4")
    assert isinstance(llm._served().model.layers[0].key, QMatrix)
    assert llm._served() is not make()._served()
    assert isinstance(llm.complete("Hello").text, str)
