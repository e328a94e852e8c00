"""WebGPU plumbing: device/adapter negotiation, tensors, shaders, the command recorder."""

from .device import AdapterInfo, Device, get_device, list_adapters
from .recorder import Counter, Graph, ceil_div, pack_params
from .tensor import (
    Act,
    BufferRange,
    Matrix,
    QMatrix,
    Weight,
    act_buffer,
    upload_matrices,
    upload_matrix,
    upload_qmatrices,
    upload_qmatrix,
    vec4_start,
)

__all__ = [
    "Act",
    "AdapterInfo",
    "BufferRange",
    "Counter",
    "Device",
    "Graph",
    "Matrix",
    "QMatrix",
    "Weight",
    "act_buffer",
    "ceil_div",
    "get_device",
    "list_adapters",
    "pack_params",
    "upload_matrices",
    "upload_matrix",
    "upload_qmatrices",
    "upload_qmatrix",
    "vec4_start",
]
