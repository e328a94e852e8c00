"""Adapter choice, feature/limit negotiation and buffer creation, in one place.

Nothing here runs at import time: a :class:`Device` is created on demand (usually
through :func:`get_device`), and the environment is never read (the CLI passes an
adapter filter down explicitly).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import AdapterError, GPUMemoryError

log = logging.getLogger(__name__)

MAP_POLLS = 1000  # waiting polls after its submission before a buffer mapping counts as lost

@functools.cache
def _native_calls() -> Any:
    """wgpu-native's C functions for submitting with an index and mapping a buffer after that
    submission alone (wgpu-py's mapping waits for every submission), or None."""
    try:
        from wgpu.backends.wgpu_native._ffi import ffi, lib
    except ImportError:
        return None
    names = ("wgpuQueueSubmitForIndex", "wgpuDevicePoll", "wgpuBufferMapAsync", "wgpuBufferGetConstMappedRange",
             "wgpuBufferUnmap")  # fmt: skip
    return (ffi, lib) if all(hasattr(lib, n) for n in names) else None

NO_ADAPTER_HELP = (
    "No WebGPU adapter was found. Install a GPU driver that wgpu can reach: on Debian/Ubuntu "
    "`apt-get install mesa-vulkan-drivers` gives the software Vulkan adapter (lavapipe); NVIDIA/AMD/"
    "Intel users need their vendor's Vulkan driver (Metal and DX12 work on macOS/Windows)."
)

# Limits we ask for at the adapter's full value: large models need big bindings, and
# the GL backend gives fewer storage buffers per stage than Vulkan.
_WANTED_LIMITS = (
    "max-storage-buffer-binding-size",
    "max-buffer-size",
    "max-storage-buffers-per-shader-stage",
    "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup",
    "max-compute-workgroup-size-x",
    "max-compute-workgroup-size-y",
    "max-compute-workgroups-per-dimension",
)


@dataclass(frozen=True)
class AdapterInfo:
    """What the engine knows about the adapter it runs on."""

    name: str
    backend: str
    adapter_type: str
    shader_f16: bool
    subgroup: bool
    timestamp_query: bool
    max_binding_size: int
    max_buffer_size: int
    max_storage_buffers: int
    subgroup_size: int = 0  # subgroup size measured at start-up (0: no subgroups)
    max_invocations: int = 256  # per workgroup
    max_workgroup_storage: int = 16384  # bytes of workgroup memory

    @property
    def cpu(self) -> bool:
        """A software adapter running on the CPU (lavapipe, llvmpipe): barriers, workgroup memory
        and gathered loads cost most there, so some kernels have CPU variants."""
        return self.adapter_type.lower() == "cpu"

    def describe(self) -> str:
        extras = [f for f, on in (("shader-f16", self.shader_f16), ("subgroup", self.subgroup)) if on]
        return f"{self.name} ({self.backend}{', ' + ', '.join(extras) if extras else ''})"


def list_adapters() -> list[Any]:
    """All adapters wgpu can see (an empty list when there is no driver)."""
    import wgpu

    try:
        return list(wgpu.gpu.enumerate_adapters_sync())
    except Exception as exc:  # wgpu raises plain RuntimeError when no backend loads
        log.debug("enumerate_adapters failed: %s", exc)
        return []


def _matches(adapter: Any, wanted: str) -> bool:
    info = adapter.info
    text = " ".join(str(info.get(k, "")) for k in ("device", "vendor", "backend_type", "adapter_type"))
    return all(part in text.lower() for part in wanted.lower().split())


def choose_adapter(adapter: str | None = None, power_preference: str = "high-performance") -> Any:
    """Pick an adapter. ``adapter`` filters by words in the name/backend (e.g. "vulkan", "opengl",
    "nvidia", "llvmpipe vulkan"); None takes wgpu's choice for ``power_preference``."""
    import wgpu

    if adapter:
        found = [a for a in list_adapters() if _matches(a, adapter)]
        if not found:
            names = [f"{a.info['device']} ({a.info['backend_type']})" for a in list_adapters()]
            raise AdapterError(
                f"no WebGPU adapter matches {adapter!r}; available: {', '.join(names) or 'none'}. "
                + ("" if names else NO_ADAPTER_HELP)
            )
        return found[0]
    try:
        chosen = wgpu.gpu.request_adapter_sync(power_preference=power_preference)
    except Exception as exc:
        raise AdapterError(f"{NO_ADAPTER_HELP} (wgpu said: {exc})") from exc
    if chosen is None:
        raise AdapterError(NO_ADAPTER_HELP)
    return chosen


class Device:
    """A wgpu device with the features and limits this engine uses."""

    def __init__(self, adapter: str | None = None, *, use_f16: bool = True, use_subgroup: bool = True):
        self.adapter = choose_adapter(adapter)
        feats = set(self.adapter.features)
        want = [f for f, use in (("shader-f16", use_f16), ("subgroup", use_subgroup)) if use and f in feats]
        if "timestamp-query" in feats:
            want.append("timestamp-query")
        limits = self.adapter.limits
        required = {k: limits[k] for k in _WANTED_LIMITS if k in limits}
        try:
            self.device = self.adapter.request_device_sync(
                required_features=want, required_limits=required, label="rwkv-webgpu"
            )
        except Exception as exc:
            raise AdapterError(f"could not open a device on {self.adapter.info['device']}: {exc}") from exc
        info = self.adapter.info
        self.info = AdapterInfo(
            name=str(info.get("device", "unknown")),
            backend=str(info.get("backend_type", "unknown")),
            adapter_type=str(info.get("adapter_type", "")),
            shader_f16="shader-f16" in want,
            subgroup="subgroup" in want,
            timestamp_query="timestamp-query" in want,
            max_binding_size=int(required.get("max-storage-buffer-binding-size", 128 << 20)),
            max_buffer_size=int(required.get("max-buffer-size", 256 << 20)),
            max_storage_buffers=int(required.get("max-storage-buffers-per-shader-stage", 8)),
            max_invocations=int(required.get("max-compute-invocations-per-workgroup", 256)),
            max_workgroup_storage=int(required.get("max-compute-workgroup-storage-size", 16384)),
        )
        self.queue = self.device.queue
        from .shaders import PipelineCache

        self.pipelines = PipelineCache(self)
        self.allocated_bytes = 0  # every buffer this device created (never freed explicitly)
        self._scratch: Any = None
        self._mapped: Any = None  # read_staging's C callback and the status it reports
        if self.info.subgroup:
            self.info = dataclasses.replace(self.info, subgroup_size=self._subgroup_size())
        log.info("WebGPU device: %s", self.info.describe())

    def _subgroup_size(self) -> int:
        """What the adapter reports in a compute shader (wgpu's adapter info only has defaults)."""
        out = self.storage(16, "subgroup_size")
        pipe = self.pipelines.get("subgroup_size")
        group = self.device.create_bind_group(
            layout=pipe.get_bind_group_layout(0), entries=[{"binding": 1, "resource": {"buffer": out, "offset": 0, "size": 16}}]
        )
        enc = self.device.create_command_encoder()
        cp = enc.begin_compute_pass()
        cp.set_pipeline(pipe)
        cp.set_bind_group(0, group)
        cp.dispatch_workgroups(1, 1, 1)
        cp.end()
        self.queue.submit([enc.finish()])
        return int(self.read(out, np.uint32)[0])

    # -- buffers -----------------------------------------------------------------------------
    def create_buffer(self, size: int, usage: int, label: str = "") -> Any:
        """A zero-filled buffer; sizes are rounded up to 16 bytes. Failures become RWKVErrors."""
        size = max(16, (int(size) + 15) // 16 * 16)
        if size > self.info.max_buffer_size:
            raise GPUMemoryError(
                f"buffer {label!r} needs {size / 2**20:.1f} MiB, more than the adapter's largest "
                f"buffer ({self.info.max_buffer_size / 2**20:.0f} MiB) on {self.info.name}"
            )
        import wgpu

        try:
            buf = self.device.create_buffer(size=size, usage=usage, label=label)
            self.allocated_bytes += size
            return buf
        except (wgpu.GPUOutOfMemoryError, MemoryError) as exc:
            raise GPUMemoryError(
                f"out of GPU memory allocating {label!r} ({size / 2**20:.1f} MiB) on {self.info.name}"
            ) from exc
        except Exception as exc:
            raise GPUMemoryError(f"could not allocate {label!r} ({size} bytes): {exc}") from exc

    def storage(self, size: int, label: str = "") -> Any:
        import wgpu

        usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.COPY_SRC
        return self.create_buffer(size, usage, label)

    def scratch(self, size: int) -> Any:
        """A storage buffer of at least ``size`` bytes shared by every kernel that needs temporary
        space within one dispatch pair (dispatches run in order, so sharing is safe). A larger
        request replaces it for later users; earlier bind groups keep the old one alive."""
        if self._scratch is None or self._scratch.size < size:
            self._scratch = self.storage(size, "scratch")
        return self._scratch

    def uniform(self, data: bytes | np.ndarray, label: str = "") -> Any:
        import wgpu

        raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        buf = self.create_buffer(len(raw), wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST, label)
        self.queue.write_buffer(buf, 0, raw)
        return buf

    def staging(self, size: int, label: str = "") -> Any:
        import wgpu

        return self.create_buffer(size, wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST, label)

    def upload(self, array: np.ndarray, label: str = "") -> Any:
        """A storage buffer holding ``array``'s bytes."""
        raw = np.ascontiguousarray(array)
        buf = self.storage(raw.nbytes, label)
        if raw.nbytes:
            self.write(buf, raw)
        return buf

    def write(self, buffer: Any, array: np.ndarray, offset: int = 0) -> None:
        raw = np.ascontiguousarray(array)
        pad = (-raw.nbytes) % 4
        data = raw.tobytes() + b"\0" * pad
        self.queue.write_buffer(buffer, offset, data)

    def submit(self, command_buffers: list[Any]) -> int | None:
        """Submit; returns the submission's index where wgpu-native gives one (for
        :meth:`read_staging` to wait on that submission alone), else None."""
        native = _native_calls()
        if native is None:
            self.queue.submit(command_buffers)
            return None
        ffi, lib = native
        handles = ffi.new("WGPUCommandBuffer[]", [cb._internal for cb in command_buffers])
        return int(lib.wgpuQueueSubmitForIndex(self.queue._internal, len(command_buffers), handles))

    def read_staging(self, buffer: Any, size: int, after: int | None = None) -> bytearray:
        """The first ``size`` bytes of a MAP_READ ``buffer`` once submission ``after`` (from
        :meth:`submit`) has finished, without waiting for later submissions; with None, or
        without wgpu-native, once every submission has (wgpu-py's mapping)."""
        import wgpu

        size = max(4, size + (-size) % 4)
        native = _native_calls()
        if native is None or after is None:
            buffer.map_sync(wgpu.MapMode.READ, 0, size)
            try:
                return bytearray(buffer.read_mapped(0, size))
            finally:
                buffer.unmap()
        ffi, lib = native
        if self._mapped is None:  # one C callback for every mapping (they run one at a time)
            status: list[Any] = [None]

            @ffi.callback("void(WGPUMapAsyncStatus, WGPUStringView, void *, void *)")
            def mapped(code: int, _message: Any, _u1: Any, _u2: Any) -> None:
                status[0] = code

            self._mapped = (mapped, status)
        mapped, status = self._mapped
        status[0] = None
        info = ffi.new("WGPUBufferMapCallbackInfo *")
        info.mode = lib.WGPUCallbackMode_AllowProcessEvents
        info.callback = mapped
        lib.wgpuBufferMapAsync(buffer._internal, lib.WGPUMapMode_Read, 0, size, info[0])
        index = ffi.new("WGPUSubmissionIndex *", after)
        lib.wgpuDevicePoll(self.device._internal, True, index)  # returns once that submission is done
        for _ in range(MAP_POLLS):  # the callback comes with a poll once the GPU work is done
            if status[0] is not None:
                break
            # again for that submission only: a poll without an index would also wait for the
            # steps queued after it (a decode chain's next step), leaving the GPU idle after
            lib.wgpuDevicePoll(self.device._internal, True, index)
        if status[0] is None:
            raise AdapterError(f"mapping {buffer.label!r} for reading never completed on {self.info.name} "
                               "(the device may be lost)")  # fmt: skip
        if status[0] != lib.WGPUMapAsyncStatus_Success:
            raise AdapterError(f"could not map {buffer.label!r} for reading (status {status[0]}) on {self.info.name}")
        try:
            return bytearray(ffi.buffer(lib.wgpuBufferGetConstMappedRange(buffer._internal, 0, size), size))
        finally:
            lib.wgpuBufferUnmap(buffer._internal)

    def read(self, buffer: Any, dtype: Any = np.float32, offset: int = 0, size: int | None = None) -> np.ndarray:
        """Copy a storage buffer back to the host (slow path; the model uses a persistent staging buffer)."""
        data = self.queue.read_buffer(buffer, offset, size)
        return np.frombuffer(bytes(data), dtype=dtype).copy()


_DEVICES: dict[tuple[str | None, bool, bool], Device] = {}


def get_device(adapter: str | None = None, *, use_f16: bool = True, use_subgroup: bool = True) -> Device:
    """A shared :class:`Device` per adapter filter, created on first use."""
    key = (adapter, use_f16, use_subgroup)
    if key not in _DEVICES:
        _DEVICES[key] = Device(adapter, use_f16=use_f16, use_subgroup=use_subgroup)
    return _DEVICES[key]
