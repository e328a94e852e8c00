"""WGSL sources and compiled pipelines.

A kernel's source is ``prelude (generated) + shaders/common.wgsl + helpers + body``, the body
being ``shaders/<name>.wgsl`` unless ``BODIES`` names another file (one body, several helpers).
The prelude only holds ``enable`` lines and type aliases chosen from the device's
features; kernel bodies are never rewritten. Numbers (workgroup size, head size, ...) are
``override`` constants given at pipeline creation and are part of the cache key.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AdapterError
from .trusted import trusted_checks, trusted_module

if TYPE_CHECKING:
    from .device import Device


def shader_dir() -> Path:
    """Where the .wgsl files live: inside the installed package, or the checkout's shaders/."""
    try:
        packaged = resources.files("rwkv_webgpu") / "shaders"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "shaders"


@functools.cache
def read_shader(name: str) -> str:
    path = shader_dir() / f"{name}.wgsl"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AdapterError(f"shader file missing: {path} ({exc})") from exc


def shader_names() -> list[str]:
    return sorted(p.stem for p in shader_dir().glob("*.wgsl"))


@dataclass(frozen=True)
class PipelineKey:
    """Everything that makes two compute pipelines different."""

    shader: str
    entry: str = "main"
    constants: tuple[tuple[str, float], ...] = ()


# Helper files a kernel needs besides common.wgsl (kept here, not in a preprocessor).
HELPERS: dict[str, tuple[str, ...]] = {
    "matmul": ("matmul_io", "x_reads", "tile16"),
    "matmul_quant": ("matmul_io", "x_reads", "quant_codebook", "weights_quant", "tile16"),
    "matmul_quant_tiled": ("matmul_io", "x_reads", "quant_codebook", "weights_quant", "tile_big"),
    "matmul_quant_subgroup": ("matmul_io", "x_reads", "quant_codebook", "quant_word"),
    "matmul_subgroup": ("matmul_io", "x_reads", "decode_row"),
    "matmul_group": ("matmul_group_io", "x_reads"),
    "matmul_group_subgroup": ("matmul_group_io", "x_reads", "decode_row"),
    "matmul_quant_group": ("matmul_group_io", "x_reads", "quant_codebook", "quant_word"),
    "matmul_tiled": ("matmul_io", "x_reads", "weights_f16", "tile_big"),
    "matmul_group_tiled": ("matmul_group_io", "x_reads", "tile_big"),
    "layer_norm": ("reduce", "row_sums"),
    "sample": ("reduce",),
    "time_mix_v5": ("reduce", "wkv_common", "decay_none"),
    "time_mix_v6": ("reduce", "wkv_common", "decay_lora"),
    "time_mix_v5_lanes": ("reduce", "wkv_common", "decay_none", "time_mix_v5"),
    "time_mix_v7": ("reduce", "wkv_common"),
    "token_shift": ("reduce", "row_sums"),
}

# Kernels whose body is another kernel's file, built with their own HELPERS (the tiled GEMM reads
# weights through weights8(): weights_f16 for matmul_tiled, weights_quant for matmul_quant_tiled;
# the V5/V6 time mix's `decode` gets its decay through decay_none or decay_lora).
BODIES: dict[str, str] = {"matmul_quant_tiled": "matmul_tiled", "time_mix_v6": "time_mix_v5"}


def shader_source(name: str, f16: bool = False) -> str:
    """The full WGSL text compiled for kernel ``name``."""
    parts = [prelude(f16), read_shader("common")]
    parts += [read_shader(h) for h in HELPERS.get(name, ())]
    parts.append(read_shader(BODIES.get(name, name)))
    return "\n".join(parts)


def prelude(f16: bool) -> str:
    # Weights are always f16 pairs packed in u32 (portable); `enable f16` only when present.
    return "enable f16;\n" if f16 else ""


class PipelineCache:
    """Compiles each (shader, entry, constants) once per device."""

    def __init__(self, device: Device):
        self.device = device
        self._modules: dict[str, Any] = {}
        self._pipelines: dict[PipelineKey, Any] = {}
        self.sources: dict[str, str] = {}  # kernels given as text (hooks), by name

    def add_source(self, code: str) -> str:
        """Register a kernel given as WGSL text (common.wgsl is prepended); returns its name."""
        import hashlib

        name = "custom_" + hashlib.sha256(code.encode()).hexdigest()[:16]
        self.sources[name] = code
        return name

    def module(self, name: str) -> Any:
        if name not in self._modules:
            own = name not in self.sources  # hooks' kernels keep wgpu's runtime checks
            code = shader_source(name) if own else read_shader("common") + "\n" + self.sources[name]
            checks = trusted_checks(name) if own else None
            module = None
            if checks is not None:
                try:
                    module = trusted_module(self.device.device, code, name, checks)
                except Exception:  # noqa: BLE001 - another wgpu-py's internals: compile the usual way
                    module = None
            try:
                if module is None:
                    module = self.device.device.create_shader_module(code=code, label=name)
                self._modules[name] = module
            except Exception as exc:
                raise AdapterError(f"shader {name}.wgsl failed to compile on {self.device.info.name}: {exc}") from exc
        return self._modules[name]

    def get(self, shader: str, entry: str = "main", **constants: float) -> Any:
        key = PipelineKey(shader, entry, tuple(sorted(constants.items())))
        pipe = self._pipelines.get(key)
        if pipe is None:
            try:
                pipe = self.device.device.create_compute_pipeline(
                    layout="auto",
                    compute={"module": self.module(shader), "entry_point": entry, "constants": dict(constants)},
                    label=f"{shader}:{entry}",
                )
            except AdapterError:
                raise
            except Exception as exc:
                raise AdapterError(f"pipeline {shader}:{entry} {constants} failed on {self.device.info.name}: {exc}") from exc
            self._pipelines[key] = pipe
        return pipe

    def __len__(self) -> int:
        return len(self._pipelines)
