"""rwkv_webgpu: RWKV language models (V4, V5, V6, V7) on any WebGPU adapter, with no torch and no CUDA.

Quick start::

    import rwkv_webgpu as rw
    model = rw.load_model("model.pth")
    state = model.new_state()
    logits = model.forward(model.tokenizer.encode("Hello"), state)
"""

from .cache import PrefixCache
from .chat import Chat
from .config import ModelInfo, Version
from .errors import (
    AdapterError,
    CheckpointError,
    ConfigError,
    GPUMemoryError,
    RWKVError,
    ShapeError,
    StateError,
    TokenError,
    TokenizerError,
    UnknownVersionError,
    UnsafeCheckpointError,
)
from .generate import GenerationResult, generate, generate_stream
from .loader import load_model
from .models.base import Model
from .runtime import Completion, Engine
from .sampling import Sampler, SamplingConfig
from .state import State
from .tokenizer import load_tokenizer
from .weights.lora import LoraSpec
from .weights.quant import Quant, QuantPlan

__version__ = "0.1.0"

__all__ = [
    "AdapterError",
    "Chat",
    "CheckpointError",
    "ConfigError",
    "Completion",
    "Engine",
    "GPUMemoryError",
    "GenerationResult",
    "LoraSpec",
    "Model",
    "ModelInfo",
    "PrefixCache",
    "Quant",
    "QuantPlan",
    "RWKVError",
    "Sampler",
    "SamplingConfig",
    "ShapeError",
    "State",
    "StateError",
    "TokenError",
    "TokenizerError",
    "UnknownVersionError",
    "UnsafeCheckpointError",
    "Version",
    "generate",
    "generate_stream",
    "load_model",
    "load_tokenizer",
]
