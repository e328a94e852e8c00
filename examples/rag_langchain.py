"""Retrieval-augmented answers with LangChain on a local RWKV model.

Documents -> RWKVEmbeddings -> LangChain's in-memory vector store -> the closest documents for a
question -> ChatRWKV answers from them.

    pip install rwkv-webgpu[langchain]
    python examples/rag_langchain.py --question "What does the prefix cache do?"
    python examples/rag_langchain.py --model RWKV-x070-World-1.5B.pth --adapter vulkan

Without --model it uses the bundled demo model (a tiny model trained on Python's docs: it
retrieves well enough to show the pipeline, its answers are not to be trusted).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_rwkv_webgpu import ChatRWKV, RWKVEmbeddings

DOCUMENTS = [
    (
        "RWKV is a recurrent neural network that trains like a transformer: its state has a fixed "
        "size, so every new token costs the same, however long the text."
    ),
    "rwkv-webgpu runs RWKV models on any GPU through WebGPU, with no CUDA and no torch.",
    (
        "The prefix cache keeps the state after prompts it has seen, so a prompt that starts the "
        "same way is not processed again."
    ),
    "A state file holds a conversation's recurrent state; loading it continues the conversation.",
    "Stop strings end generation; the text stops right before the first one and never contains it.",
]


def build_store(
    embeddings: RWKVEmbeddings, texts: Sequence[str] = DOCUMENTS
) -> InMemoryVectorStore:
    """An in-memory vector store holding ``texts`` embedded by the RWKV model."""
    store = InMemoryVectorStore(embeddings)
    store.add_documents([Document(page_content=t, metadata={"id": i}) for i, t in enumerate(texts)])
    return store


def answer(
    chat: ChatRWKV, store: InMemoryVectorStore, question: str, k: int = 2
) -> tuple[str, list[Document]]:
    """The model's answer to ``question`` from the ``k`` documents closest to it, and those documents."""
    found = store.as_retriever(search_kwargs={"k": k}).invoke(question)
    context = "\n".join(f"- {d.page_content}" for d in found)
    messages = [SystemMessage(f"Answer from these notes:\n{context}"), HumanMessage(question)]
    return str(chat.invoke(messages).content), found


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--model", default="demo", help="checkpoint path or registered model name (default: demo)"
    )
    ap.add_argument("--tokenizer", help="tokenizer.json or vocab file (default: the model's own)")
    ap.add_argument("--adapter", help="WebGPU adapter filter, e.g. vulkan")
    ap.add_argument("--question", default="What does the prefix cache do?")
    ap.add_argument("--max-tokens", type=int, default=60)
    ap.add_argument("-k", type=int, default=2, help="documents to retrieve")
    args = ap.parse_args(argv)

    common: dict[str, Any] = {
        "model": args.model,
        "tokenizer": args.tokenizer,
        "adapter": args.adapter,
    }
    store = build_store(RWKVEmbeddings(**common))
    # the demo model never learnt the chat format: let it write past the end of the turn
    chat = ChatRWKV(
        **common, temperature=0, max_tokens=args.max_tokens, stop_at_turn_end=args.model != "demo"
    )
    text, found = answer(chat, store, args.question, args.k)
    print("retrieved:")
    for d in found:
        print(f"  [{d.metadata['id']}] {d.page_content}")
    print(f"\nQ: {args.question}\nA: {text.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
