"""``RWKV``: a LangChain text-completion model over a local RWKV model on WebGPU."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult

from rwkv_webgpu.plugins.serving import Outcome

from ._common import GenerationFields, events_as_callbacks
from .chat_models import finish_info


def _info(out: Outcome, model_id: str) -> dict[str, Any]:
    usage = {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
             "total_tokens": out.prompt_tokens + out.completion_tokens, "cached_tokens": out.cached_tokens}  # fmt: skip
    return {**finish_info(out, model_id), "token_usage": usage}


class RWKV(GenerationFields, LLM):
    """Continue text with an RWKV model running locally on any WebGPU adapter.

    Same settings as :class:`ChatRWKV`; the prompt is fed as it is (no chat format), and
    ``generation_info`` holds the finish reason and token usage.
    """

    @property
    def _llm_type(self) -> str:
        return "rwkv-webgpu"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self.params()

    def get_num_tokens(self, text: str) -> int:
        return len(self.served().encode(text))

    def _start(self, prompt: str, stop: list[str] | None, kwargs: dict[str, Any]) -> Any:
        served = self.served(kwargs.get("model"))
        return served, self.request(served.encode(prompt), stop, **kwargs)

    def _call(self, prompt: str, stop: list[str] | None = None,
              run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> str:  # fmt: skip
        return self._generate([prompt], stop, run_manager, **kwargs).generations[0][0].text

    def _generate(self, prompts: list[str], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> LLMResult:  # fmt: skip
        gens = []
        for prompt in prompts:
            served, req = self._start(prompt, stop, kwargs)
            with events_as_callbacks(run_manager):
                gen = served.start(req)
                text = "".join(gen)
            gens.append(
                [Generation(text=text, generation_info=_info(gen.outcome, served.model_id))]
            )
        return LLMResult(generations=gens)

    async def _agenerate(self, prompts: list[str], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> LLMResult:  # fmt: skip
        async def one(prompt: str) -> list[Generation]:
            served, req = await asyncio.to_thread(self._start, prompt, stop, kwargs)
            pieces, done = await served.astart(req)
            text = "".join([p async for p in pieces])
            return [Generation(text=text, generation_info=_info(done(), served.model_id))]

        return LLMResult(generations=list(await asyncio.gather(*(one(p) for p in prompts))))

    def _stream(self, prompt: str, stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[GenerationChunk]:  # fmt: skip
        served, req = self._start(prompt, stop, kwargs)
        gen = served.start(req)
        try:
            for piece in gen:
                chunk = GenerationChunk(text=piece)
                if run_manager:
                    run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
        finally:
            gen.close()
        yield GenerationChunk(text="", generation_info=_info(gen.outcome, served.model_id))

    async def _astream(self, prompt: str, stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> AsyncIterator[GenerationChunk]:  # fmt: skip
        served, req = await asyncio.to_thread(self._start, prompt, stop, kwargs)
        pieces, done = await served.astart(req)
        try:
            async for piece in pieces:
                chunk = GenerationChunk(text=piece)
                if run_manager:
                    await run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
        finally:
            await pieces.aclose()
        yield GenerationChunk(text="", generation_info=_info(done(), served.model_id))
