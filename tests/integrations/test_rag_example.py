"""examples/rag_langchain.py end to end: embed, store, retrieve, answer."""

from __future__ import annotations

import importlib.util

import pytest
from model_under_test import ROOT, model_params


def load_example():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "rag_langchain", ROOT / "examples" / "rag_langchain.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rag_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    p = model_params()
    args = ["--model", p["model"], "--tokenizer", p["tokenizer"], "--max-tokens", "8"]
    if p["adapter"]:
        args += ["--adapter", p["adapter"]]
    assert load_example().main(args) == 0
    out = capsys.readouterr().out
    assert "retrieved:" in out and "Q: What does the prefix cache do?" in out and "\nA:" in out


def test_retrieval_finds_the_document_itself() -> None:
    from langchain_rwkv_webgpu import RWKVEmbeddings

    rag = load_example()
    store = rag.build_store(RWKVEmbeddings(**model_params()))
    for i in (0, 2, 4):
        found = store.similarity_search(rag.DOCUMENTS[i], k=1)
        assert found[0].metadata["id"] == i
