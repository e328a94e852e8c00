"""The Ray Serve deployment on a local Ray instance: two replicas of the demo model answer
concurrent OpenAI-shaped HTTP requests (streaming too), and a killed replica is replaced while
its in-flight requests fail promptly instead of hanging."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("ray")
httpx = pytest.importorskip("httpx")

TIMEOUT = 60.0
PROMPTS = ["The cat", "A dog", "Hello world", "Once upon a time", "def main():", "1, 2, 3,"]


@pytest.fixture(scope="module")
def base_url(ray_local, free_port):
    from ray import serve

    from rwkv_webgpu.serve import ServeConfig, build_app

    port = free_port
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = ServeConfig(adapter="vulkan", max_batch=4)
    serve.run(build_app(config, num_replicas=2, num_cpus=1), route_prefix="/", name="rwkv")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def expected():
    """Greedy completions of each prompt from the engine called directly in this process."""
    import rwkv_webgpu as rw
    from rwkv_webgpu.cli import demo_model_path

    path = demo_model_path()
    model = rw.load_model(path, tokenizer=str(path.with_name("tokenizer.json")), adapter="vulkan")
    with rw.Engine(model, max_batch=4) as engine:
        cfg = rw.SamplingConfig(temperature=0)
        handles = [engine.submit(p, max_tokens=8, sampling=cfg) for p in PROMPTS]
        return {p: h.result(TIMEOUT).text for p, h in zip(PROMPTS, handles)}


def _complete(url: str, prompt: str) -> dict:
    body = {"model": "demo", "prompt": prompt, "max_tokens": 8, "temperature": 0}
    r = httpx.post(f"{url}/v1/completions", json=body, timeout=TIMEOUT)
    assert r.status_code < 400 or r.status_code >= 500, r.text
    r.raise_for_status()
    return r.json()


def _stream(url: str, path: str, body: dict) -> list[dict]:
    events = []
    with httpx.stream("POST", f"{url}{path}", json={**body, "stream": True}, timeout=TIMEOUT) as r:
        r.raise_for_status()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                return events
            events.append(json.loads(data))
    raise AssertionError("the stream ended without data: [DONE]")


def _replicas(url: str, tries: int = 40) -> set[str]:
    seen = set()
    for _ in range(tries):
        seen.add(httpx.get(f"{url}/health", timeout=TIMEOUT).json()["replica"])
    return seen


def test_two_replicas_answer_concurrent_requests(base_url, expected):
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda p: _complete(base_url, p), PROMPTS * 2))
    for prompt, answer in zip(PROMPTS * 2, answers):
        (choice,) = answer["choices"]
        assert answer["object"] == "text_completion"
        assert choice["text"] == expected[prompt], prompt
        assert answer["usage"]["completion_tokens"] <= 8
    assert len(_replicas(base_url)) == 2


def test_concurrent_streams_match_plain_answers(base_url, expected):
    def run(prompt: str) -> list[dict]:
        return _stream(
            base_url, "/v1/completions", {"prompt": prompt, "max_tokens": 8, "temperature": 0}
        )

    with ThreadPoolExecutor(6) as pool:
        streams = list(pool.map(run, PROMPTS))
    for prompt, events in zip(PROMPTS, streams):
        text = "".join(e["choices"][0]["text"] for e in events)
        assert text == expected[prompt]
        assert events[-1]["choices"][0]["finish_reason"] in ("length", "stop")
        assert len({e["id"] for e in events}) == 1


def test_chat_streaming_and_plain_agree(base_url):
    body = {"messages": [{"role": "user", "content": "Tell me about cats"}], "max_tokens": 8,
            "temperature": 0, "stream_options": {"include_usage": True}}  # fmt: skip
    events = _stream(base_url, "/v1/chat/completions", body)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert events[-1]["usage"]["completion_tokens"] >= 1
    r = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=TIMEOUT)
    r.raise_for_status()
    message = r.json()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": streamed}


def test_openai_client(base_url):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(
        base_url=f"{base_url}/v1", api_key="unused", timeout=TIMEOUT, max_retries=0
    )
    out = client.completions.create(model="demo", prompt="The cat", max_tokens=8, temperature=0)
    assert out.choices[0].finish_reason in ("length", "stop")
    chunks = client.chat.completions.create(model="demo", max_tokens=8, temperature=0, stream=True,
                                            messages=[{"role": "user", "content": "Hi"}])  # fmt: skip
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[0] is None and reasons[-1] in ("length", "stop")
    with pytest.raises(openai.BadRequestError, match="n=1"):
        client.completions.create(model="demo", prompt="x", n=2, max_tokens=8)


def test_bad_requests_get_openai_errors(base_url):
    r = httpx.post(f"{base_url}/v1/completions", json={"max_tokens": 8}, timeout=TIMEOUT)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "prompt"
    r = httpx.post(
        f"{base_url}/v1/chat/completions", json={"messages": [], "max_tokens": 8}, timeout=TIMEOUT
    )
    assert r.status_code == 400


def test_killed_replica_is_replaced_and_requests_never_hang(base_url, expected):
    # the last test of the module: it kills a replica process while requests are running
    victim = httpx.get(f"{base_url}/health", timeout=TIMEOUT).json()
    prompts = PROMPTS * 4

    def attempt(prompt: str) -> tuple[str, object]:
        try:
            return "ok", _complete(base_url, prompt)["choices"][0]["text"]
        except httpx.HTTPStatusError as exc:
            return "error", exc.response.status_code
        except httpx.TransportError as exc:
            return "error", repr(exc)

    start = time.monotonic()
    with ThreadPoolExecutor(len(prompts)) as pool:
        futures = [pool.submit(attempt, p) for p in prompts]
        time.sleep(0.3)
        os.kill(victim["pid"], signal.SIGKILL)
        results = [f.result(timeout=TIMEOUT) for f in futures]  # none hangs
    assert time.monotonic() - start < TIMEOUT
    for prompt, (status, value) in zip(prompts, results):
        if status == "ok":
            assert value == expected[prompt]  # answered (by either replica, or retried) correctly
        else:
            assert value in (500, 502, 503) or "Error" in str(value)

    # Serve notices the dead actor and starts a replacement: two live replicas again
    deadline = time.monotonic() + 90
    while True:
        try:
            seen = _replicas(base_url, 20)
            pids = {
                httpx.get(f"{base_url}/health", timeout=TIMEOUT).json()["pid"] for _ in range(20)
            }
            if len(seen) == 2 and victim["replica"] not in seen and victim["pid"] not in pids:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the killed replica was not replaced"
        time.sleep(1)
    assert _complete(base_url, "The cat")["choices"][0]["text"] == expected["The cat"]
