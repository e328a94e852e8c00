"""ChatRWKV, RWKV and RWKVEmbeddings beyond the standard suites: streaming equals invoking when
greedy, stop strings, limits, usage, conversation reuse, state files and their callback events."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableLambda
from langchain_rwkv_webgpu import RWKV, ChatRWKV, RWKVEmbeddings
from model_under_test import chat_params, llm_params, model_params

PROMPTS = ["Hello", "The Python interpreter", "w5 w17 w3"]


def joined(chunks: list[Any]) -> Any:
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    return full


@pytest.mark.parametrize("prompt", PROMPTS)
def test_stream_equals_invoke_when_greedy(prompt: str) -> None:
    model = ChatRWKV(**chat_params(max_tokens=12))
    answer = model.invoke(prompt)
    chunks = list(model.stream(prompt))
    assert "".join(c.content for c in chunks) == answer.content
    assert joined(chunks).usage_metadata["output_tokens"] == answer.usage_metadata["output_tokens"]
    assert (
        chunks[-1].response_metadata["finish_reason"] == answer.response_metadata["finish_reason"]
    )


async def test_astream_equals_ainvoke_when_greedy() -> None:
    model = ChatRWKV(**chat_params(max_tokens=12))
    answer = await model.ainvoke("Hello")
    pieces = [c.content async for c in model.astream("Hello")]
    assert "".join(pieces) == answer.content == model.invoke("Hello").content


def test_usage_and_finish_reason() -> None:
    model = ChatRWKV(**chat_params(max_tokens=5))
    answer = model.invoke("Hello")
    usage = answer.usage_metadata
    prompt_tokens = model.get_num_tokens_from_messages([HumanMessage("Hello")])
    assert usage["input_tokens"] == prompt_tokens
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert 0 < usage["output_tokens"] <= 5
    meta = answer.response_metadata
    assert meta["model_name"] == model.model_name
    assert meta["finish_reason"] in ("stop", "length")
    if usage["output_tokens"] == 5:
        assert meta["finish_reason"] == "length"


@pytest.mark.parametrize("max_tokens", [1, 3, 9])
def test_max_tokens_is_honoured(max_tokens: int) -> None:
    model = ChatRWKV(**chat_params(max_tokens=max_tokens))
    answer = model.invoke("The Python interpreter")
    assert answer.usage_metadata["output_tokens"] <= max_tokens
    llm = RWKV(**llm_params(max_tokens=max_tokens))
    info = llm.generate(["The Python interpreter"]).generations[0][0].generation_info
    assert info["token_usage"]["completion_tokens"] == max_tokens or info["finish_reason"] == "stop"


def test_stop_strings_are_never_emitted() -> None:
    """Cut a greedy answer at a string inside it: the text ends right before it, streaming too."""
    model = ChatRWKV(**chat_params(max_tokens=16))
    full = model.invoke("Hello").content
    assert len(full) > 4
    stop = full[len(full) // 2 : len(full) // 2 + 3]  # spans token boundaries more often than not
    for stops in ([stop], ["never-generated", stop]):
        cut = model.invoke("Hello", stop=stops)
        assert cut.content == full[: full.index(stop)]
        assert cut.response_metadata["rwkv_finish_reason"] == "stop"
        streamed = "".join(c.content for c in model.stream("Hello", stop=stops))
        assert streamed == cut.content and stop not in streamed
    bound = ChatRWKV(**chat_params(max_tokens=16, stop=[stop]))
    assert bound.invoke("Hello").content == full[: full.index(stop)]


def test_llm_stop_and_stream() -> None:
    llm = RWKV(**llm_params(max_tokens=10))
    full = llm.invoke("The Python interpreter")
    assert "".join(llm.stream("The Python interpreter")) == full
    stop = full[3:6]
    assert llm.invoke("The Python interpreter", stop=[stop]) == full[: full.index(stop)]


def test_get_num_tokens_uses_the_model_tokenizer() -> None:
    from rwkv_webgpu.tokenizer import load_tokenizer

    model = ChatRWKV(**chat_params())
    tok = load_tokenizer(model_params()["tokenizer"])
    for text in ("Hello there", "w3 w4 w5 w6", ""):
        assert (
            model.get_num_tokens(text) == len(tok.encode(text))
            if text
            else model.get_num_tokens(text) == 0
        )


def test_conversation_reuses_the_previous_prompt_state() -> None:
    model = ChatRWKV(**chat_params(max_tokens=4))
    first = [SystemMessage("You are terse."), HumanMessage("Tell me about w7 and the interpreter")]
    answer = model.invoke(first)
    second = model.invoke([*first, AIMessage(answer.content), HumanMessage("And then?")])
    cached = second.usage_metadata["input_token_details"]["cache_read"]
    assert cached >= answer.usage_metadata["input_tokens"]  # the whole first prompt was restored
    assert cached < second.usage_metadata["input_tokens"]


def test_model_override_per_call_and_shared_engine() -> None:
    a, b = ChatRWKV(**chat_params()), ChatRWKV(**chat_params(temperature=0.5))
    assert a.served() is b.served()  # one engine and prefix cache per model
    with pytest.raises(Exception, match="unknown model"):
        a.invoke("Hello", model="no-such-model.pth")


class Events(BaseCallbackHandler):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.seen.append((name, data))


def test_state_save_and_load_with_callback_events(tmp_path: Any) -> None:
    model = ChatRWKV(**chat_params(max_tokens=6))
    messages = [HumanMessage("Remember w11 and the interpreter")]
    ids = model.prompt_ids(messages)
    path = str(tmp_path / "conversation.state")
    events = Events()
    saved = RunnableLambda(lambda _: model.save_state(ids, path)).invoke(
        None, {"callbacks": [events]}
    )
    assert saved == path
    assert events.seen == [
        ("rwkv_webgpu.state_saved", {"model_id": model.model_name, "location": path, "tokens": ids})
    ]
    model.load_state(path)  # outside any run: no one to tell, and no error
    model.served().cache.clear()
    RunnableLambda(lambda _: model.load_state(path)).invoke(None, {"callbacks": [events]})
    assert events.seen[-1][0] == "rwkv_webgpu.state_loaded" and events.seen[-1][1]["tokens"] == ids
    answer = model.invoke(messages)
    assert answer.usage_metadata["input_token_details"]["cache_read"] == len(
        ids
    )  # resumed from the file
    model.served().cache.clear()
    assert model.invoke(messages).content == answer.content  # the same as computing it afresh


async def test_async_work_stays_off_the_event_loop() -> None:
    model = ChatRWKV(**chat_params(max_tokens=12))
    await model.ainvoke("Hello")  # loaded
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    text = "".join([c.content async for c in model.astream("The Python interpreter")])
    done.set()
    await task
    assert text and ticks > 12, (
        f"the event loop ran {ticks} times in {time.perf_counter() - start:.2f} s"
    )


def test_embeddings_are_unit_vectors_of_the_hidden_size() -> None:
    emb = RWKVEmbeddings(**model_params())
    served = emb.served()
    a, b = emb.embed_documents(["w3 w4 w5", "The Python interpreter"])
    assert len(a) == len(b) == served.model.info.num_emb
    assert abs(sum(x * x for x in a) - 1) < 1e-5
    assert emb.embed_query("w3 w4 w5") == pytest.approx(a, abs=1e-6)
    assert a != pytest.approx(b, abs=1e-3)


def test_quantized_model_is_its_own_engine() -> None:
    """``quant`` loads the model quantized: another engine than the f16 one, its matrices quantized."""
    from rwkv_webgpu.gpu import Matrix, QMatrix

    plain, mixed = ChatRWKV(**chat_params()), ChatRWKV(**chat_params(), quant={"att": "int8", "ffn": "nf4"})
    assert mixed.served() is not plain.served()
    assert mixed.served() is ChatRWKV(**chat_params(), quant="att=int8,ffn=nf4").served()  # same mix, same engine
    layer = mixed.served().model.layers[0]
    assert isinstance(plain.served().model.layers[0].key, Matrix)
    assert isinstance(layer.key, QMatrix) and layer.key.quant.value == "int8" and layer.ffn_key.quant.value == "nf4"
    assert isinstance(mixed.invoke("Hello", max_tokens=3).content, str)
    with pytest.raises(Exception, match="unknown quantization 'int3'"):
        ChatRWKV(**chat_params(), quant="int3").invoke("Hello")
