"""The built wheel ships the integrations under the names their frameworks import, and ``llm``
finds the plugin of a plain (non-editable) install through its entry point."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from model_under_test import ROOT, is_demo, model_params


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    (found,) = out.glob("rwkv_webgpu-*.whl")
    return found


def test_wheel_holds_the_integrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for want in ("langchain_rwkv_webgpu/chat_models.py", "llama_index/llms/rwkv_webgpu/base.py",
                 "llm_rwkv_webgpu/__init__.py", "rwkv_webgpu/plugins/hookspecs.py"):  # fmt: skip
        assert want in names
    assert "llama_index/__init__.py" not in names  # a namespace shared with llama-index itself
    assert "[llm]\nrwkv_webgpu = llm_rwkv_webgpu" in entry_points


def test_llm_command_after_installing_the_wheel(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    # dependencies from this interpreter (plain paths: the checkout's editable install stays inactive)
    Path(purelib, "parent_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    user = tmp_path / "llm-user"
    user.mkdir()
    p = model_params()
    (user / "rwkv-webgpu.json").write_text(
        json.dumps({"test": {"path": p["model"], "tokenizer": p["tokenizer"]}})
    )
    env = {**os.environ, "LLM_USER_PATH": str(user), "RWKV_WEBGPU_ADAPTER": p["adapter"] or ""}
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    code = "import llama_index.llms.rwkv_webgpu as m, llm_rwkv_webgpu as l; print(m.__file__); print(l.__file__)"
    where = subprocess.run(
        [str(py), "-c", code],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert where.returncode == 0 and str(env_dir) in where.stdout, where.stdout + where.stderr
    raw = ["-o", "raw", "1"] if is_demo() else []  # the demo model is not tuned to chat
    res = subprocess.run([str(py), "-m", "llm", "-m", "rwkv/test", "-o", "temperature", "0", "-o", "max_tokens", "4", *raw, "Hello"],
                         check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip()
