"""Installed third-party rwkv_webgpu plugins are not loaded in these tests unless a test asks."""

from __future__ import annotations

import os

os.environ["RWKV_WEBGPU_LOAD_PLUGINS"] = ""
