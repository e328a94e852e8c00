"""Serve the demo model on Ray with two replicas and query it with the OpenAI client.

pip install "rwkv-webgpu[ray]" openai
python examples/ray_serve.py
"""

from __future__ import annotations

import ray
from ray import serve

from rwkv_webgpu.serve import ServeConfig, build_app


def main() -> None:
    ray.init(runtime_env={"env_vars": {"XDG_RUNTIME_DIR": "/tmp"}})
    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    serve.run(build_app(ServeConfig(model="demo", max_batch=8), num_replicas=2), route_prefix="/")

    from openai import OpenAI

    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    stream = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "Tell me about cats."}],
        max_tokens=64,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
