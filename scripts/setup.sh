#!/usr/bin/env bash
# One-time set-up of a fresh machine: the software Vulkan driver (when missing and we are root),
# a virtual environment in .venv, and the package with its test extra. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ldconfig -p 2>/dev/null | grep -q libvulkan_lvp && [ ! -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] \
   && ! ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing the software Vulkan/GL drivers (mesa-vulkan-drivers)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq mesa-vulkan-drivers libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 >/dev/null
  else
    echo "note: no Vulkan driver found; install mesa-vulkan-drivers (or your GPU vendor's driver)" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".[test]"
