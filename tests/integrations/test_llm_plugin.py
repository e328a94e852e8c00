"""Simon Willison's ``llm``: the plugin is found through its ``llm`` entry point, ``llm -m rwkv/NAME``
works from the command line, options reach the sampler, conversations reuse the prompt state."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import llm
import pytest
from click.testing import CliRunner
from llm.cli import cli
from model_under_test import is_demo, model_params
from pydantic import ValidationError

# the demo model never learnt the chat format (it ends a chat turn at once): give it plain text
RAW = {"raw": True} if is_demo() else {}
RAW_ARGS = ["-o", "raw", "1"] if is_demo() else []


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An llm user directory naming the test model ``rwkv/test``."""
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))
    p = model_params()
    (tmp_path / "rwkv-webgpu.json").write_text(
        json.dumps({"test": {"path": p["model"], "tokenizer": p["tokenizer"]}})
    )
    return tmp_path


def test_the_entry_point_is_installed() -> None:
    found = [ep for ep in entry_points(group="llm") if ep.value == "llm_rwkv_webgpu"]
    assert found, "pip install -e .[llm] registers the llm entry point"
    llm.get_models()  # loads the plugins
    assert any(p["name"] == "rwkv-webgpu" for p in llm.get_plugins())


def test_cli_prompt(user_dir: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["models", "list"])
    assert "rwkv/test" in res.output, res.output
    res = runner.invoke(
        cli, ["-m", "rwkv/test", "-o", "temperature", "0", "-o", "max_tokens", "5", "Hello"]
    )
    assert res.exit_code == 0, res.output
    model = llm.get_model("rwkv/test")
    again = model.prompt("Hello", temperature=0, max_tokens=5)
    assert res.output.rstrip("\n") == again.text()


def test_options_usage_and_conversation(user_dir: Path) -> None:
    model = llm.get_model("rwkv/test")
    conv = model.conversation()
    first = conv.prompt("Tell me about w7 and the interpreter", temperature=0, max_tokens=4, **RAW)
    chunks = list(first)
    assert "".join(chunks) == first.text()
    assert first.output_tokens is not None and first.output_tokens <= 4
    second = conv.prompt("And then?", temperature=0, max_tokens=4, **RAW)
    second.text()
    assert (
        second.token_details["cached_tokens"] >= first.input_tokens
    )  # the first turn's state came back
    with pytest.raises(ValidationError):
        model.prompt("Hello", temperature=-1).text()


def test_add_command(user_dir: Path) -> None:
    res = CliRunner().invoke(
        cli,
        [
            "rwkv-webgpu",
            "add",
            "second",
            model_params()["model"],
            "--tokenizer",
            model_params()["tokenizer"],
        ],
    )
    assert res.exit_code == 0, res.output
    listed: Any = CliRunner().invoke(cli, ["rwkv-webgpu", "models"]).output
    assert "rwkv/second" in listed and "rwkv/test" in listed


def test_add_a_quantized_model(user_dir: Path) -> None:
    from rwkv_webgpu.gpu import QMatrix
    from rwkv_webgpu.plugins import serving

    serving.release_models()
    args = ["rwkv-webgpu", "add", "mixed", model_params()["model"], "--tokenizer", model_params()["tokenizer"]]
    bad = CliRunner().invoke(cli, [*args, "--quant", "att=int9"])
    assert bad.exit_code != 0 and "unknown quantization 'int9'" in bad.output
    res = CliRunner().invoke(cli, [*args, "--quant", "att=int8,ffn=nf4"])
    assert res.exit_code == 0, res.output
    out = CliRunner().invoke(cli, ["-m", "rwkv/mixed", "Hello", "-o", "temperature", "0", "-o", "max_tokens", "3", "-o", "raw", "1"])
    assert out.exit_code == 0, out.output
    (served,) = [m for key, m in serving._served.items() if key[-1] == "att=int8,ffn=nf4"]  # the prompt loaded it
    assert isinstance(served.model.layers[0].key, QMatrix) and served.model.layers[0].ffn_key.quant.value == "nf4"
