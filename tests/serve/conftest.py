"""A local Ray instance on this machine's CPUs for the serve tests (skipped without Ray or a
WebGPU adapter). Each test module starts its own instance and shuts it down."""

from __future__ import annotations

import os
import socket

import pytest

ray = pytest.importorskip("ray")

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")


def _has_adapter() -> bool:
    from rwkv_webgpu.gpu import list_adapters

    return bool(list_adapters())


@pytest.fixture(scope="module")
def ray_local():
    if not _has_adapter():
        pytest.skip("no WebGPU adapter")
    from rwkv_webgpu.cli import demo_model_path

    if demo_model_path() is None:
        pytest.skip("the demo model is not in this install")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"XDG_RUNTIME_DIR": "/tmp"}})  # fmt: skip
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
