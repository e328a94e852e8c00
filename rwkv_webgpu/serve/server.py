"""The OpenAI-compatible HTTP API over one served model: ``/v1/completions``,
``/v1/chat/completions`` (both streaming as server-sent events), ``/v1/embeddings`` and
``/v1/models``. Framework-free logic in :class:`OpenAIServer`; :func:`create_app` mounts it on a
FastAPI app (the Ray Serve deployment in :mod:`.deployment` mounts the same routes)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import RWKVError
from ..plugins.serving import Request, ServedModel, chat_stops, served_model
from ..sampling import SamplingConfig
from .protocol import (
    DONE,
    ChatRequest,
    CompletionRequest,
    Envelope,
    ProtocolError,
    SamplingFields,
    error_body,
    finish_reason,
    usage,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    """What one replica serves and how (everything a replica needs to load its model)."""

    model: str = "demo"
    """A checkpoint path or a registered model name ("demo": the bundled demo model)."""
    tokenizer: str | None = None
    adapter: str | None = None
    """WebGPU adapter filter ("vulkan", "nvidia", ...): the adapter this replica runs on."""
    max_batch: int = 8
    """Requests the replica's engine decodes at once (continuous batching)."""
    quant: str | None = None
    """Quantization at load ("int8", "nf4", "sf4" or a mix "att=int8,ffn=nf4"); None: f16."""
    served_name: str = ""
    """The model name reported to clients; "" uses ``model``."""
    max_tokens: int = 256
    """The default (and, with ``max_tokens_limit``, the ceiling) for a request's max_tokens."""
    max_tokens_limit: int = 4096
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(top_p=0.3))
    """Sampler settings a request does not set itself."""

    @property
    def name(self) -> str:
        return self.served_name or self.model


class OpenAIServer:
    """Answer OpenAI-shaped requests with one :class:`ServedModel` (one engine, one adapter)."""

    def __init__(self, config: ServeConfig, served: ServedModel | None = None):
        self.config = config
        self.served = served or served_model(config.model, tokenizer=config.tokenizer, adapter=config.adapter,
                                             max_batch=config.max_batch, quant=config.quant)  # fmt: skip

    # -- requests -> engine requests ---------------------------------------------------------
    def _request(self, body: SamplingFields, prompt: list[int], stops: Sequence[str],
                 max_tokens: int | None) -> Request:  # fmt: skip
        body.check()
        n = self.config.max_tokens if max_tokens is None else max_tokens
        if n > self.config.max_tokens_limit:
            raise ProtocolError(
                f"max_tokens must be <= {self.config.max_tokens_limit}", "max_tokens"
            )
        if not prompt:
            raise ProtocolError("empty prompt: give at least one token", "prompt")
        try:
            self.served.model.check_tokens(prompt)
        except RWKVError as exc:
            raise ProtocolError(str(exc), "prompt") from exc
        stop = tuple(dict.fromkeys([*stops, *body.stops()]))
        return Request(
            prompt, max_tokens=n, sampling=body.sampling(self.config.sampling), stop=stop
        )

    def completion_requests(self, body: CompletionRequest) -> list[Request]:
        out = []
        for p in body.prompts():
            ids = self.served.encode(p) if isinstance(p, str) else [int(t) for t in p]
            out.append(self._request(body, ids, (), body.max_tokens))
        return out

    def chat_request(self, body: ChatRequest) -> Request:
        ids = self.served.chat_ids(body.turns())
        limit = (
            body.max_completion_tokens
            if body.max_completion_tokens is not None
            else body.max_tokens
        )
        return self._request(body, ids, chat_stops(), limit)

    # -- answering -----------------------------------------------------------------------------
    async def _run(self, req: Request) -> Any:
        pieces, done = await self.served.astart(req)
        async for _ in pieces:
            pass
        return done()

    async def complete(self, body: CompletionRequest | ChatRequest) -> dict[str, Any]:
        """The whole response body of a non-streaming request."""
        chat = isinstance(body, ChatRequest)
        reqs = (
            [self.chat_request(body)]
            if isinstance(body, ChatRequest)
            else self.completion_requests(body)
        )
        outcomes = await asyncio.gather(*(self._run(r) for r in reqs))
        env = Envelope("chatcmpl" if chat else "cmpl", self.config.name)
        echo = isinstance(body, CompletionRequest) and body.echo
        choices = []
        for i, (req, out) in enumerate(zip(reqs, outcomes)):
            text = (self.served.tokenizer.decode(req.prompt) if echo else "") + out.text
            choices.append(env.choice(i, text, finish_reason(out.finish_reason)))
        use = usage(sum(o.prompt_tokens for o in outcomes), sum(o.completion_tokens for o in outcomes),
                    sum(o.cached_tokens for o in outcomes))  # fmt: skip
        return env.completion(choices, use)

    async def prepare_stream(self, body: CompletionRequest | ChatRequest) -> AsyncIterator[str]:
        """Validate and start a streaming request (errors raise here, before any byte is sent);
        returns the server-sent events to send."""
        chat = isinstance(body, ChatRequest)
        if isinstance(body, ChatRequest):
            req = self.chat_request(body)
        else:
            reqs = self.completion_requests(body)
            if len(reqs) != 1:
                raise ProtocolError("streaming takes one prompt", "prompt")
            req = reqs[0]
        pieces, done = await self.served.astart(req)
        env = Envelope("chatcmpl" if chat else "cmpl", self.config.name)
        return self._events(env, pieces, done, body.include_usage)

    async def _events(self, env: Envelope, pieces: AsyncIterator[str], done: Any,
                      include_usage: bool) -> AsyncIterator[str]:  # fmt: skip
        try:
            if env.chat:
                yield env.chunk(None, first=True)
            async for piece in pieces:
                yield env.chunk(piece)
            out = done()
        except Exception as exc:  # the status line is sent already: report in the stream
            log.exception("streaming request failed")
            yield f"data: {_json(error_body(str(exc), 'server_error'))}\n\n"
            return
        finally:
            await _aclose(pieces)
        yield env.chunk(None, finish_reason(out.finish_reason))
        if include_usage:
            yield env.usage_chunk(
                usage(out.prompt_tokens, out.completion_tokens, out.cached_tokens)
            )
        yield DONE

    async def embeddings(self, inputs: str | list[str]) -> dict[str, Any]:
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        vectors = await asyncio.to_thread(self.served.embed, texts)
        tokens = sum(len(self.served.encode(t)) for t in texts)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": self.config.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip

    def models(self) -> dict[str, Any]:
        card = {"id": self.config.name, "object": "model", "created": 0, "owned_by": "rwkv-webgpu"}
        return {"object": "list", "data": [card]}

    def close(self) -> None:
        self.served.close()


async def _aclose(it: Any) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj)
