"""A third-party plugin installed with pip is found through its ``rwkv_webgpu`` entry point; its
sampler generates, its hook is registered and its callback hears about saved states. Switched off
by ``RWKV_WEBGPU_LOAD_PLUGINS=""``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integrations"))
from model_under_test import adapter, model_params

SCRIPT = r"""
import json, sys
from rwkv_webgpu.plugins import get_plugins
p = get_plugins()
out = {"names": p.names(), "samplers": sorted(p.samplers()), "hooks": sorted(p.hooks())}
if "example" in p.names() and len(sys.argv) > 2:
    import numpy as np
    import rwkv_webgpu_example_plugin as example
    from langchain_rwkv_webgpu import RWKV
    kw, path = json.loads(sys.argv[1]), sys.argv[2]
    llm = RWKV(**kw, temperature=0, max_tokens=4, sampler="example-runner-up")
    out["text"] = llm.invoke("The Python interpreter")
    served = llm.served()
    model, state = served.model, served.model.new_state()
    logits, ids = model.forward(served.encode("The Python interpreter"), state), []
    for _ in range(4):  # the runner-up token, step by step, straight from the model
        ids.append(int(np.argsort(-logits, kind="stable")[1]))
        logits = model.forward(ids[-1:], state)
    out["expected"] = b"".join(model.tokenizer.decode_bytes([i]) for i in ids).decode()  # as streamed
    out["greedy"] = RWKV(**kw, temperature=0, max_tokens=4).invoke("The Python interpreter")
    llm.save_state("The Python interpreter", path)
    out["saved"] = example.saved
    out["fired"] = sorted(set(example.fired))
    out["captured"] = len(model.hooks.captured.get("example", []))
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin pip-installed into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                    "--target", str(target), str(HERE / "example_plugin")],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    assert list(target.glob("rwkv_webgpu_example_plugin-*.dist-info/entry_points.txt"))
    return target


def run(site: Path, load: str | None, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "RWKV_WEBGPU_LOAD_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    if load is not None:
        env["RWKV_WEBGPU_LOAD_PLUGINS"] = load
    res = subprocess.run(  # noqa: PLW1510  (the return code is asserted with stderr)
        [sys.executable, "-c", SCRIPT, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(x for x in res.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def test_installed_plugin_is_discovered_and_used(installed: Path, tmp_path: Path) -> None:
    if adapter() is None:
        pytest.skip("no WebGPU adapter")
    state = str(tmp_path / "prompt.state")
    out = run(installed, None, json.dumps(model_params()), state)
    assert out["names"] == ["rwkv_webgpu.builtin", "example"]
    assert "example-runner-up" in out["samplers"] and out["hooks"] == ["example-hook"]
    assert out["text"] == out["expected"] != out["greedy"]
    # the plugin's model hook ran inside the forward pass and its captures came back as events
    assert out["fired"] == ["example"] and out["captured"] > 0
    assert out["saved"] == [
        {
            "model_id": model_params()["model"],
            "location": state,
            "tokens": out["saved"][0]["tokens"],
        }
    ]
    assert out["saved"][0]["tokens"]


def test_the_environment_variable_turns_it_off(installed: Path) -> None:
    assert run(installed, "")["names"] == ["rwkv_webgpu.builtin"]
    assert run(installed, "example")["names"] == ["rwkv_webgpu.builtin", "example"]
