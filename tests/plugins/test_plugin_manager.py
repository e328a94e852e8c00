"""The plugin manager: built-ins through the hooks, lookups, autoload control and events."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from rwkv_webgpu.errors import RWKVError
from rwkv_webgpu.plugins import (
    LOAD_ENV,
    ModelSource,
    Plugins,
    create_manager,
    get_plugins,
    hookimpl,
    listening,
    set_plugins,
)
from rwkv_webgpu.plugins import manager as manager_module


def plugin_module(name: str, **hooks: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    for key, fn in hooks.items():
        setattr(mod, key, hookimpl(fn))
    return mod


def test_builtins_are_registered_through_the_hooks() -> None:
    p = Plugins(create_manager(autoload=False))
    assert p.names() == ["rwkv_webgpu.builtin"]
    assert "default" in p.samplers()
    assert p.model_loaders()["rwkv"].suffixes == (".pth", ".safetensors", ".st")
    assert "file" in p.state_stores() and "world" in p.tokenizers()
    assert p.hooks() == {}  # no built-in model hooks
    assert p.loader_for("x.SAFETENSORS").name == "rwkv" and p.loader_for("x.bin").name == "rwkv"


def test_a_plugin_overrides_a_builtin_and_adds_names() -> None:
    pm = create_manager(autoload=False)
    first = object()
    pm.register(plugin_module("mine", register_samplers=lambda register: (register("default", first), register("mine", first)),
                              register_models=lambda register: register("tiny", lambda: ModelSource("/x/tiny.pth"))))  # fmt: skip
    p = Plugins(pm)
    assert p.sampler("default") is first and p.sampler("mine") is first
    assert p.model_source("tiny") == ModelSource("/x/tiny.pth")
    assert p.model_source("absent") is None
    with pytest.raises(RWKVError, match="no sampler named 'nope'.*known: default, mine"):
        p.sampler("nope")


def test_events_reach_plugins_and_listeners_and_never_raise() -> None:
    got: list[Any] = []

    def broken(model_id: str) -> None:
        raise RuntimeError("a plugin bug")

    pm = create_manager(autoload=False)
    pm.register(
        plugin_module("a", on_state_saved=lambda location: got.append(("plugin", location)))
    )
    pm.register(plugin_module("b", on_state_loaded=broken))
    p = Plugins(pm)
    with listening(lambda event, data: got.append((event, data["location"]))):
        p.emit("state_saved", model_id="m", location="here", tokens=[1])
        p.emit(
            "state_loaded", model_id="m", location="there", tokens=[1]
        )  # the plugin fails: logged
    p.emit(
        "hook_fired", model_id="m", hook="h", layer=0, data=None
    )  # no listener outside the block
    assert got == [("plugin", "here"), ("state_saved", "here"), ("state_loaded", "there")]
    with pytest.raises(ValueError, match="unknown event"):
        p.emit("state_exploded")


class FakeEntryPoint:
    def __init__(self, name: str, module: types.ModuleType):
        self.name, self.group, self.value = name, "rwkv_webgpu", module.__name__
        self._module = module

    def load(self) -> types.ModuleType:
        return self._module


@pytest.mark.parametrize(
    "setting, loaded", [("", []), ("two", ["two"]), (" one , two ", ["one", "two"])]
)
def test_the_environment_variable_selects_installed_plugins(monkeypatch: pytest.MonkeyPatch, setting: str, loaded: list[str]) -> None:  # fmt: skip
    mods = {
        n: plugin_module(f"fake_{n}", register_samplers=lambda register, n=n: register(n, object()))
        for n in ("one", "two")
    }
    eps = [FakeEntryPoint(n, m) for n, m in mods.items()]
    monkeypatch.setattr(
        manager_module, "entry_points", lambda group: [e for e in eps if e.group == group]
    )
    monkeypatch.setenv(LOAD_ENV, setting)
    assert sorted(n for n in Plugins(create_manager()).samplers() if n != "default") == loaded


def test_unset_loads_every_installed_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOAD_ENV, raising=False)
    assert manager_module._autoload_setting() is True
    monkeypatch.setenv(LOAD_ENV, "")
    assert manager_module._autoload_setting() == []


def test_process_wide_plugins_are_built_once_and_resettable() -> None:
    set_plugins(None)
    first = get_plugins()
    assert get_plugins() is first
    set_plugins(None)
    assert get_plugins() is not first


def test_importing_loads_nothing() -> None:
    import subprocess

    code = "import rwkv_webgpu.plugins as p, rwkv_webgpu.plugins.manager as m; print(m._plugins is None)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "True"


def test_quantizing_through_a_loader_that_cannot_is_a_clear_error(tmp_path: Any) -> None:
    """served_model passes ``quant`` only when asked; a plugin loader without it says so."""
    from rwkv_webgpu.plugins.serving import served_model

    seen: list[dict[str, Any]] = []

    def load(path: str, tokenizer: Any = None, adapter: Any = None) -> Any:
        seen.append({"tokenizer": tokenizer, "adapter": adapter})
        raise RuntimeError("loaded")  # enough: the options are what this test looks at

    pm = create_manager(autoload=False)
    pm.register(plugin_module("fmt", register_model_loaders=lambda register: register("fmt", load, (".fmt",))))
    set_plugins(Plugins(pm))
    try:
        path = tmp_path / "m.fmt"
        path.write_bytes(b"")
        with pytest.raises(RuntimeError, match="loaded"):
            served_model(str(path), tokenizer="world")
        assert seen == [{"tokenizer": "world", "adapter": None}]
        with pytest.raises(RWKVError, match="'fmt' model loader cannot quantize"):
            served_model(str(path), tokenizer="world", quant="nf4")
    finally:
        set_plugins(None)
