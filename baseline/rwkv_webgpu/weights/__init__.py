"""Checkpoint reading: ``.pth`` without torch, ``.safetensors`` / web-rwkv ``.st``, version
detection and conversion. Everything outside this package sees official tensor names and
official PyTorch shapes only.
"""

from .checkpoint import Checkpoint, open_checkpoint
from .convert import convert
from .detect import detect, expected_shapes
from .safetensors_io import save_safetensors

__all__ = [
    "Checkpoint",
    "convert",
    "detect",
    "expected_shapes",
    "open_checkpoint",
    "save_safetensors",
]
