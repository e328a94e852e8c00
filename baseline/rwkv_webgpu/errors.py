"""Every error the library raises on purpose derives from :class:`RWKVError`.

Messages say what was wrong and where (file, tensor, token, slot), so a user can
fix the input without reading a traceback.
"""

from __future__ import annotations


class RWKVError(Exception):
    """Base class of all errors raised deliberately by rwkv_webgpu."""


class ConfigError(RWKVError, ValueError):
    """A setting is out of range (e.g. ``token_chunk_size``); also a ValueError."""


class CheckpointError(RWKVError):
    """A model or state file is missing, truncated, corrupt or not a checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """A `.pth` pickle asks for something other than plain tensors (refused, never executed)."""


class UnknownVersionError(CheckpointError):
    """The tensor names do not match any RWKV layout this library knows."""


class ShapeError(RWKVError):
    """A tensor or input has the wrong shape."""


class TokenError(RWKVError):
    """A token id is outside the vocabulary, negative, or the token list is empty."""


class TokenizerError(RWKVError):
    """A tokenizer file could not be read or text could not be encoded/decoded."""


class StateError(RWKVError):
    """A state does not belong to this model, or batch sizes/slots do not match."""


class AdapterError(RWKVError):
    """No suitable WebGPU adapter, or the adapter lacks a required feature or limit."""


class GPUMemoryError(RWKVError):
    """The GPU ran out of memory while allocating buffers."""
