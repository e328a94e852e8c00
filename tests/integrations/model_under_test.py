"""The model every integration test uses: the bundled demo model when this checkout has it, else the
tiny fixture model with a word-level tokenizer (token i <-> "w{i}"). Generation stays short.

``RWKV_WEBGPU_TEST_MODEL=fixture`` picks the fixture model even when the demo model is there.
Imported by the tests as ``model_under_test`` (a name of its own: every test folder has a conftest).
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_MODEL = ROOT / "tests" / "fixtures" / "models" / "v7_L2_C64_V97.pth"


@functools.lru_cache(maxsize=1)
def adapter() -> str | None:
    """The software adapter to run on (Vulkan first), or None when there is none."""
    from rwkv_webgpu.gpu import list_adapters

    backends = [str(a.info.get("backend_type", "")).lower() for a in list_adapters()]
    for want in ("vulkan", "metal", "d3d12", "opengl"):
        if want in backends:
            return want
    return None


def word_tokenizer(vocab: int, folder: Path) -> Path:
    """An HF WordLevel tokenizer.json: "w{i}" is token i, any other word the token 1."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w1"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = folder / f"words{vocab}.json"
    tok.save(str(path))
    return path


@functools.lru_cache(maxsize=1)
def model_params() -> dict[str, Any]:
    """Constructor arguments naming the test model (``model``, ``tokenizer``, ``adapter``)."""
    from rwkv_webgpu.cli import demo_model_path

    demo = demo_model_path()
    if demo is not None and os.environ.get("RWKV_WEBGPU_TEST_MODEL") != "fixture":
        return {
            "model": str(demo),
            "tokenizer": str(demo.with_name("tokenizer.json")),
            "adapter": adapter(),
        }
    folder = Path(tempfile.mkdtemp(prefix="rwkv-integrations-"))
    return {
        "model": str(FIXTURE_MODEL),
        "tokenizer": str(word_tokenizer(97, folder)),
        "adapter": adapter(),
    }


def is_demo() -> bool:
    return Path(model_params()["model"]).name == "rwkv7-demo.pth"


def llm_params(**extra: Any) -> dict[str, Any]:
    """RWKV (text completion) arguments: the test model, greedy, a few tokens."""
    return {**model_params(), "temperature": 0, "max_tokens": 6, **extra}


def chat_params(**extra: Any) -> dict[str, Any]:
    """ChatRWKV arguments as :func:`llm_params`. The demo model is not tuned to chat (it answers
    with a blank line first), so with it answers do not stop at the end of a turn."""
    return llm_params(stop_at_turn_end=not is_demo(), **extra)
