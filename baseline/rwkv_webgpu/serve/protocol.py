"""The OpenAI completions and chat completions wire format: request models, response bodies and
server-sent-event chunks. Pure data: no model, no Ray, no web framework."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..sampling import SamplingConfig

# the engine's finish reasons -> OpenAI's ("eos" and a stop string both end the text naturally)
FINISH_REASONS = {"stop": "stop", "eos": "stop", "length": "length", "cancelled": "stop"}


class ProtocolError(ValueError):
    """A request the server cannot honour (answered with HTTP 400 and OpenAI's error body)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(BaseModel):
    """The sampler fields shared by both endpoints; None keeps the server's default."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: str = ""
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # not OpenAI's, accepted as vLLM and llama.cpp servers do
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None

    def sampling(self, default: SamplingConfig) -> SamplingConfig:
        names = (
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "presence_penalty",
            "frequency_penalty",
            "seed",
        )
        changes = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        try:
            return default.replace(**changes)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from exc

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def check(self) -> None:
        if self.n != 1:
            raise ProtocolError("only n=1 is supported", "n")

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(SamplingFields):
    """``POST /v1/completions``."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False

    def prompts(self) -> list[str | list[int]]:
        """The prompts, each text or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise ProtocolError("empty prompt", "prompt")
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise ProtocolError(f"unsupported content part {part.get('type')!r}", "messages")
            parts.append(str(part.get("text", "")))
        return "".join(parts)


class ChatRequest(SamplingFields):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage]
    max_completion_tokens: int | None = Field(default=None, ge=0)

    def turns(self) -> list[tuple[str, str]]:
        if not self.messages:
            raise ProtocolError("messages must not be empty", "messages")
        # OpenAI's "developer" role is the newer name of "system"
        return [("system" if m.role == "developer" else m.role, m.text()) for m in self.messages]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def finish_reason(engine_reason: str) -> str:
    return FINISH_REASONS.get(engine_reason, engine_reason)


class Envelope:
    """The fields every response and chunk of one request shares."""

    def __init__(self, kind: Literal["cmpl", "chatcmpl"], model: str):
        self.id = new_id(kind)
        self.created = int(time.time())
        self.model = model
        self.chat = kind == "chatcmpl"

    def body(self, obj: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": choices, **extra}  # fmt: skip

    def completion(self, choices: list[dict[str, Any]], use: dict[str, Any]) -> dict[str, Any]:
        return self.body("chat.completion" if self.chat else "text_completion", choices, usage=use)

    def choice(self, index: int, text: str, reason: str) -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": text}
            return {"index": index, "message": message, "finish_reason": reason, "logprobs": None}
        return {"index": index, "text": text, "finish_reason": reason, "logprobs": None}

    def chunk(self, text: str | None, reason: str | None = None, first: bool = False) -> str:
        """One server-sent event carrying ``text`` (None: no content) and/or the finish reason."""
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
            return sse(self.body("chat.completion.chunk", [choice]))
        choice = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
        return sse(self.body("text_completion", [choice]))

    def usage_chunk(self, use: dict[str, Any]) -> str:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return sse(self.body(obj, [], usage=use))


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event: ``data: <json>`` and a blank line."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n"


DONE = sse("[DONE]")


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
