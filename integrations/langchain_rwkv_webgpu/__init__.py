"""LangChain integration for rwkv-webgpu: ``ChatRWKV``, ``RWKV`` and ``RWKVEmbeddings``.

Install with ``pip install rwkv-webgpu[langchain]``. See docs/integrations.md.
"""

from .chat_models import ChatRWKV
from .embeddings import RWKVEmbeddings
from .llms import RWKV

__all__ = ["RWKV", "ChatRWKV", "RWKVEmbeddings"]
