"""Shared fixtures. GPU tests run on every software adapter present (Vulkan lavapipe, GL llvmpipe)
and skip cleanly when there is none."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")


def _adapters() -> list[str]:
    from rwkv_webgpu.gpu import list_adapters

    found = []
    for a in list_adapters():
        backend = str(a.info.get("backend_type", "")).lower()
        if backend in ("vulkan", "opengl", "metal", "d3d12") and backend not in found:
            found.append(backend)
    return found


ADAPTERS = _adapters()


@pytest.fixture(scope="session", params=ADAPTERS or [pytest.param(None, marks=pytest.mark.skip("no WebGPU adapter"))])
def device(request):
    from rwkv_webgpu.gpu import get_device

    return get_device(request.param)


@pytest.fixture(scope="session")
def vulkan_device():
    from rwkv_webgpu.gpu import get_device

    if "vulkan" not in ADAPTERS:
        pytest.skip("no Vulkan adapter")
    return get_device("vulkan")
