"""The wheel carries every shader and data file, and installs a working console script."""

from __future__ import annotations

import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    found = list(out.glob("rwkv_webgpu-*.whl"))
    assert len(found) == 1
    return found[0]


def test_wheel_holds_every_shader(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shaders = sorted(p.name for p in (ROOT / "shaders").glob("*.wgsl"))
    assert shaders, "no shaders in the checkout?"
    for s in shaders:
        assert f"rwkv_webgpu/shaders/{s}" in names
    assert "rwkv_webgpu/tokenizer/rwkv_vocab_v20230424.txt" in names


def test_installed_wheel_runs_help(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # dependencies come from this interpreter's site-packages (listed as plain paths, so an
    # editable install of the checkout there stays inactive)
    child_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(child_site, "parent_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    res = subprocess.run([str(env_dir / "bin" / "rwkv-webgpu"), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "generate" in res.stdout
    # the installed copy finds its shaders inside the package, not in this checkout
    code = "from rwkv_webgpu.gpu.shaders import shader_dir; print(shader_dir())"
    where = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert "site-packages" in where.stdout, where.stdout + where.stderr
