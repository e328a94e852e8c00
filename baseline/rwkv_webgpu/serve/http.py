"""FastAPI routes for :class:`~.server.OpenAIServer`: the error handling both the Ray Serve
deployment and a plain ASGI app (:func:`create_app`, for one process without Ray) share."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from ..errors import RWKVError
from .protocol import ChatRequest, CompletionRequest, ProtocolError, error_body
from .server import OpenAIServer, ServeConfig

log = logging.getLogger(__name__)


def add_error_handlers(app: FastAPI) -> None:
    """Answer errors with OpenAI's ``{"error": {...}}`` body: 400 for bad requests, 500 otherwise."""

    async def bad_request(_: Request, exc: Exception) -> JSONResponse:
        param = getattr(exc, "param", None)
        return JSONResponse(error_body(str(exc), param=param), status_code=400)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        where = ".".join(str(p) for p in errors[0]["loc"][1:]) if errors else None
        message = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in errors)
        return JSONResponse(error_body(message or str(exc), param=where or None), status_code=400)

    async def failed(_: Request, exc: Exception) -> JSONResponse:
        log.error("request failed: %s", exc)
        return JSONResponse(error_body(str(exc), "server_error"), status_code=500)

    app.add_exception_handler(ProtocolError, bad_request)
    app.add_exception_handler(ValueError, bad_request)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(RWKVError, failed)


async def respond(server: OpenAIServer, body: CompletionRequest | ChatRequest) -> Any:
    """A JSON response, or a server-sent-event stream when the request asks for one."""
    if body.stream:
        events = await server.prepare_stream(body)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    return await server.complete(body)


def create_app(config: ServeConfig | None = None, server: OpenAIServer | None = None) -> FastAPI:
    """The OpenAI-compatible API of one process (no Ray): ``uvicorn`` can serve it directly."""
    srv = server or OpenAIServer(config or ServeConfig())
    app = FastAPI(title="rwkv-webgpu")
    add_error_handlers(app)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> Any:
        return await respond(srv, body)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest) -> Any:
        return await respond(srv, body)

    @app.post("/v1/embeddings")
    async def embeddings(body: dict[str, Any]) -> Any:
        return await srv.embeddings(body.get("input", ""))

    @app.get("/v1/models")
    async def models() -> Any:
        return srv.models()

    return app
