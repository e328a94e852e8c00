"""LangChain's standard test suites (langchain-tests, pinned in the test extra) on the test model.

Tool calling, structured output, JSON mode and multimodal inputs are skipped by the suites' own
flags: ChatRWKV has no ``bind_tools``/``with_structured_output`` and reads text only.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from langchain_rwkv_webgpu import ChatRWKV, RWKVEmbeddings
from langchain_tests.integration_tests import ChatModelIntegrationTests, EmbeddingsIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests, EmbeddingsUnitTests
from model_under_test import chat_params, model_params

_copy: list[str] = []


def other_model() -> str:
    """A second model name for the per-call ``model=`` override: a copy of the test checkpoint."""
    if not _copy:
        src = Path(model_params()["model"])
        dst = Path(tempfile.mkdtemp(prefix="rwkv-override-")) / f"override-{src.name}"
        shutil.copyfile(src, dst)
        _copy.append(str(dst))
    return _copy[0]


class TestChatRWKVUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatRWKV]:
        return ChatRWKV

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # the suite adds its own max_tokens and stop here; nothing is generated
        return {k: v for k, v in chat_params().items() if k not in ("max_tokens", "temperature")}


class TestChatRWKVIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatRWKV]:
        return ChatRWKV

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return chat_params()

    @property
    def model_override_value(self) -> str:
        return other_model()

    @property
    def supported_usage_metadata_details(self) -> dict[str, list[str]]:
        return {"invoke": ["cache_read_input"], "stream": ["cache_read_input"]}

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> Any:
        model = ChatRWKV(**chat_params())
        model.invoke(
            "Tell me about the prefix cache"
        )  # the second call restores this prompt's state
        if stream:
            full = None
            for chunk in model.stream("Tell me about the prefix cache"):
                full = chunk if full is None else full + chunk
            return full
        return model.invoke("Tell me about the prefix cache")


class TestRWKVEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[RWKVEmbeddings]:
        return RWKVEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return model_params()


class TestRWKVEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[RWKVEmbeddings]:
        return RWKVEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return model_params()
