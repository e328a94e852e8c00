"""Integration tests: installed third-party rwkv_webgpu plugins are not loaded here
(``RWKV_WEBGPU_LOAD_PLUGINS=""``), so they cannot change what these tests see; without a WebGPU
adapter every test here is skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["RWKV_WEBGPU_LOAD_PLUGINS"] = ""  # before anything builds the plugin manager

from model_under_test import adapter


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if adapter() is not None:
        return
    skip = pytest.mark.skip(reason="no WebGPU adapter")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)
