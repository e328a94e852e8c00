"""The Ray Serve deployment: one replica per adapter, each with its own model, engine and prefix
cache (continuous batching inside a replica), answering the OpenAI-compatible HTTP API.

    from ray import serve
    from rwkv_webgpu.serve import ServeConfig, build_app
    serve.run(build_app(ServeConfig(model="demo"), num_replicas=2))

or from a shell: ``serve run rwkv_webgpu.serve.deployment:app_builder model=demo num_replicas=2``.
"""

# no `from __future__ import annotations`: FastAPI reads the route annotations of the
# Serve-wrapped class at run time
import dataclasses
import os
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from ..sampling import SamplingConfig
from .http import add_error_handlers, respond
from .protocol import ChatRequest, CompletionRequest
from .server import OpenAIServer, ServeConfig

api = FastAPI(title="rwkv-webgpu")
add_error_handlers(api)

# Mesa's software adapters warn on every start without a runtime directory
DEFAULT_ENV = {"XDG_RUNTIME_DIR": "/tmp"}


@serve.deployment(name="rwkv", health_check_period_s=2, health_check_timeout_s=30)
@serve.ingress(api)
class RWKVDeployment:
    """One replica: loads ``config.model`` on its adapter and serves it over HTTP."""

    def __init__(self, config: ServeConfig):
        self.server = OpenAIServer(config)

    @api.post("/v1/completions")
    async def completions(self, body: CompletionRequest) -> Any:
        return await respond(self.server, body)

    @api.post("/v1/chat/completions")
    async def chat(self, body: ChatRequest) -> Any:
        return await respond(self.server, body)

    @api.post("/v1/embeddings")
    async def embeddings(self, body: dict[str, Any]) -> Any:
        return await self.server.embeddings(body.get("input", ""))

    @api.get("/v1/models")
    async def models(self) -> Any:
        return self.server.models()

    @api.get("/health")
    async def health(self) -> Any:
        """Which replica answered (its Serve id and process id) and its engine's counters."""
        stats = dataclasses.asdict(self.server.served.engine.stats)
        replica = serve.get_replica_context().replica_id.unique_id
        return {"status": "ok", "replica": replica, "pid": os.getpid(), "engine": stats}

    def check_health(self) -> None:
        if self.server.served.engine._closed:
            raise RuntimeError("the engine is closed")

    def __del__(self) -> None:
        server = getattr(self, "server", None)  # None when __init__ failed
        if server is not None:
            server.close()


def build_app(config: ServeConfig | None = None, *, num_replicas: int | str = 1,
              autoscaling_config: dict[str, Any] | None = None, max_ongoing_requests: int | None = None,
              num_cpus: float = 1, num_gpus: float = 0, env_vars: dict[str, str] | None = None,
              name: str = "rwkv") -> Application:  # fmt: skip
    """The Serve application for ``config``.

    ``num_gpus=1`` gives each replica a GPU of its own (one replica per adapter); on machines
    without one, ``num_cpus`` is what a replica reserves. ``autoscaling_config`` (Ray's keys:
    ``min_replicas``, ``max_replicas``, ``target_ongoing_requests``, ...) replaces a fixed
    ``num_replicas``. ``max_ongoing_requests`` (default: twice the engine's batch) is how many
    requests the router sends one replica before it queues them or picks another.
    """
    config = config or ServeConfig()
    options: dict[str, Any] = {
        "name": name,
        "max_ongoing_requests": max_ongoing_requests or 2 * config.max_batch,
        "ray_actor_options": {
            "num_cpus": num_cpus,
            "num_gpus": num_gpus,
            "runtime_env": {"env_vars": {**DEFAULT_ENV, **(env_vars or {})}},
        },
    }
    if autoscaling_config is not None:
        options["autoscaling_config"] = autoscaling_config
    else:
        options["num_replicas"] = num_replicas
    return RWKVDeployment.options(**options).bind(config)  # type: ignore[attr-defined]


def app_builder(args: dict[str, str]) -> Application:
    """For ``serve run rwkv_webgpu.serve.deployment:app_builder key=value ...``: the keys of
    :class:`ServeConfig` and of :func:`build_app`, plus ``temperature`` and ``top_p``."""
    fields = {f.name: f for f in dataclasses.fields(ServeConfig)}
    ints = ("max_batch", "max_tokens", "max_tokens_limit", "max_ongoing_requests")
    floats = ("num_cpus", "num_gpus")
    config: dict[str, Any] = {}
    app_kwargs: dict[str, Any] = {}
    sampling: dict[str, Any] = {}
    for key, value in args.items():
        parsed: Any = int(value) if key in ints else float(value) if key in floats else value
        if key in ("temperature", "top_p"):
            sampling[key] = float(value)
        elif key in fields:
            config[key] = parsed
        elif key == "num_replicas":
            app_kwargs[key] = value if value == "auto" else int(value)
        elif key in ("max_ongoing_requests", "num_cpus", "num_gpus", "name"):
            app_kwargs[key] = parsed
        else:
            raise ValueError(f"unknown argument {key!r}")
    config["sampling"] = SamplingConfig(**{"top_p": 0.3, **sampling})
    return build_app(ServeConfig(**config), **app_kwargs)
