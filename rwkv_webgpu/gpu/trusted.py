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

The setting is ``RWKV_WEBGPU_SHADER_CHECKS``: ``all`` (wgpu's default, the fallback too),
``bounds`` (index clamps kept, loop counters dropped) or ``none``. Buffer accesses stay safe in
every mode where the driver has robust buffer access (wgpu relies on it for buffers anyway).
"""

from __future__ import annotations

import os
from typing import Any

# bits of WGPUShaderRuntimeChecks (wgpu.h)
BOUNDS = 0x1
LOOPS = 0x2
MODES = {"all": None, "bounds": BOUNDS, "none": 0}
DEFAULT = "all"


def trusted_checks() -> int | None:
    """The runtime checks to compile the project's kernels with; None: wgpu's usual path."""
    mode = os.environ.get("RWKV_WEBGPU_SHADER_CHECKS", DEFAULT).strip().lower()
    if mode not in MODES:
        raise ValueError(f"RWKV_WEBGPU_SHADER_CHECKS must be one of {', '.join(MODES)}, got {mode!r}")
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
