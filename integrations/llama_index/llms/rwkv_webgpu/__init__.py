"""llama-index integration for rwkv-webgpu (``pip install rwkv-webgpu[llama-index]``).

>>> from llama_index.llms.rwkv_webgpu import RWKVWebGPU
>>> llm = RWKVWebGPU(model="RWKV-x070-World-1.5B.pth", temperature=0)
"""

from .base import RWKVWebGPU

__all__ = ["RWKVWebGPU"]
