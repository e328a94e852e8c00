"""``RWKVEmbeddings``: LangChain embeddings from an RWKV model's final hidden state."""

from __future__ import annotations

import asyncio

from langchain_core.embeddings import Embeddings

from ._common import ModelFields


class RWKVEmbeddings(ModelFields, Embeddings):
    """Embed text as the RWKV model's final normalised hidden state (``ln_out`` of the last token),
    the fixed-size summary of the whole text that the recurrence carries; ``normalize`` scales it
    to unit length (cosine similarity = dot product)."""

    normalize: bool = True

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors = self.served().embed(texts)
        return [_unit(v) for v in vectors] if self.normalize else vectors

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)


def _unit(v: list[float]) -> list[float]:
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v] if norm > 0 else v
