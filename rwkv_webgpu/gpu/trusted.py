"""Compiling the project's own WGSL without the runtime checks wgpu adds to every shader.

wgpu rewrites each shader it compiles: dynamic indices into arrays and vectors are clamped
("bounds checks") and every loop gets a hidden 64-bit counter that breaks out after 2^64 turns
("loop bounding", so that a loop the driver might assume finite really is). wgpu-native can
compile a module without them (``wgpuDeviceCreateShaderModuleTrusted``), but wgpu-py does not
wrap that call, so :func:`trusted_module` makes it through wgpu-py's cffi handle. Only the
kernels in ``shaders/`` go this way, and only when :func:`trusted_checks` says so: every loop in
them is bounded by a count taken from a uniform or a constant, and every array index is tested
(the op tests run each kernel on odd sizes against numpy). Kernels given as text by hooks keep
wgpu's checks.

The setting is ``RWKV_WEBGPU_SHADER_CHECKS``: ``auto`` (the default: loop counters dropped
everywhere, index clamps kept except in the tiled GEMM kernels of UNCHECKED), ``all`` (wgpu's
usual checks, also the fallback where the call is missing), ``bounds`` (index clamps kept, loop
counters dropped, every kernel) or ``none``. On an NVIDIA H100 (Vulkan) the loop counters alone
cost a 64-token batched product 30-40% and a decoding step 6%; the index clamps cost the tiled
products another 5-13% but nothing measurable elsewhere (docs/performance.md, ninth round).
Buffer accesses stay safe in every mode where the driver has robust buffer access (wgpu relies
on it for buffers anyway); the tiled kernels test every buffer index against the matrix and the
step before using it, and index their workgroup arrays within their fixed sizes.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigError

# WGPUShaderRuntimeChecks (wgpu.h): bit 0x1 keeps the index clamps; 0x2 (the loop counters) is
# never set here, and "all" takes wgpu's usual path (every check) instead of a bit mask
BOUNDS = 0x1
MODES = {"all": None, "bounds": BOUNDS, "none": 0}
DEFAULT = "auto"
# kernels compiled without index clamps under "auto" (the tiled GEMMs: measured faster without)
UNCHECKED = frozenset({"matmul_tiled", "matmul_quant_tiled", "matmul_group_tiled"})
# kernels that keep all of wgpu's checks under "auto"
CHECKED: frozenset[str] = frozenset()


def trusted_checks(name: str) -> int | None:
    """The runtime checks to compile kernel ``name`` of shaders/ with; None: wgpu's usual path."""
    mode = os.environ.get("RWKV_WEBGPU_SHADER_CHECKS", DEFAULT).strip().lower()
    if mode == "auto":
        return None if name in CHECKED else 0 if name in UNCHECKED else BOUNDS
    if mode not in MODES:
        choices = ", ".join(["auto", *MODES])
        raise ConfigError(f"RWKV_WEBGPU_SHADER_CHECKS must be one of {choices}, got {mode!r}")
    return MODES[mode]


def trusted_module(device: Any, code: str, label: str, checks: int) -> Any | None:
    """A WGSL module compiled with only ``checks`` (WGPUShaderRuntimeChecks bits), or None where
    this wgpu-py build does not offer the call (then the caller compiles the usual way)."""
    try:
        from wgpu.backends.wgpu_native import _api
    except ImportError:
        return None
    lib, libf, ffi = _api.lib, getattr(_api, "libf", None), _api.ffi
    needed = (libf, getattr(_api, "new_struct_p", None), getattr(_api, "to_c_string_view", None))
    if any(n is None for n in needed) or not hasattr(lib, "wgpuDeviceCreateShaderModuleTrusted"):
        return None
    internal = getattr(device, "_internal", None)
    if internal is None:
        return None
    source = _api.new_struct_p("WGPUShaderSourceWGSL *", code=_api.to_c_string_view(code))
    source[0].chain.next = ffi.NULL
    source[0].chain.sType = lib.WGPUSType_ShaderSourceWGSL
    chain = ffi.cast("WGPUChainedStruct *", source)  # `source` stays referenced until the call returns
    desc = _api.new_struct_p("WGPUShaderModuleDescriptor *", nextInChain=chain, label=_api.to_c_string_view(label))
    handle = libf.wgpuDeviceCreateShaderModuleTrusted(internal, desc, checks)
    if handle == ffi.NULL:
        raise RuntimeError(f"shader module {label} was not created")
    return _api.GPUShaderModule(label, handle, device)
