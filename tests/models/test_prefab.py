"""Saving a loaded model (quantized or not) and loading it back: identical logits, faster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rwkv_webgpu as rw
from rwkv_webgpu.cli import main
from rwkv_webgpu.gpu import QMatrix

FIX = Path(__file__).resolve().parents[1] / "fixtures"
V7 = FIX / "models" / "v7_L2_C64_V97.pth"
V6 = FIX / "models" / "v6_L2_C64_V67.pth"


@pytest.mark.parametrize("path", [V7, V6])
@pytest.mark.parametrize("quant", [None, "int8", "nf4"])
def test_saved_model_reloads_with_identical_logits(vulkan_device, tmp_path, path, quant):
    model = rw.load_model(path, device=vulkan_device, quant=quant)
    out = tmp_path / "m.prefab"
    model.save(out)
    again = rw.load_model(out, device=vulkan_device)
    tokens = list(range(1, 30))
    assert np.array_equal(model.forward(tokens, model.new_state(), full=True),
                          again.forward(tokens, again.new_state(), full=True))  # fmt: skip
    assert isinstance(again.layers[0].key, QMatrix) == (quant is not None)
    again.save(tmp_path / "m2.prefab")
    assert (tmp_path / "m2.prefab").read_bytes() == out.read_bytes()


def test_cli_convert_quantized_prefab(vulkan_device, tmp_path, capsys):
    out = tmp_path / "m-int8.prefab"
    assert main(["convert", "--quant", "int8", str(V7), str(out)]) == 0
    assert "prefab, int8" in capsys.readouterr().out
    direct = rw.load_model(V7, device=vulkan_device, quant="int8")
    loaded = rw.load_model(out, device=vulkan_device)
    tokens = [5, 6, 7, 8]
    assert np.array_equal(direct.forward(tokens, direct.new_state()), loaded.forward(tokens, loaded.new_state()))
    assert main(["info", str(out)]) == 0


def test_damaged_prefab_is_a_clear_error(vulkan_device, tmp_path):
    model = rw.load_model(V7, device=vulkan_device, quant="int8")
    out = tmp_path / "m.prefab"
    model.save(out)
    data = out.read_bytes()
    (tmp_path / "cut.prefab").write_bytes(data[: len(data) // 2])
    with pytest.raises(rw.CheckpointError):
        rw.load_model(tmp_path / "cut.prefab", device=vulkan_device)


def test_lora_merged_quantized_model_saves_and_converts(vulkan_device, tmp_path, capsys):
    lora = FIX / "lora" / "v7_rwkvlm.pth"
    spec = rw.LoraSpec(lora)
    plain = rw.load_model(V7, device=vulkan_device)
    merged = rw.load_model(V7, device=vulkan_device, lora=[spec], quant="int8")
    tokens = list(range(3, 20))
    a = merged.forward(tokens, merged.new_state(), full=True)
    assert np.abs(a - plain.forward(tokens, plain.new_state(), full=True)).max() > 1e-2  # the LoRA matters
    merged.save(tmp_path / "saved.prefab")
    again = rw.load_model(tmp_path / "saved.prefab", device=vulkan_device)
    assert np.array_equal(a, again.forward(tokens, again.new_state(), full=True))
    out = tmp_path / "cli.prefab"
    assert main(["convert", "--quant", "int8", "--lora", str(lora), str(V7), str(out)]) == 0
    assert out.read_bytes() == (tmp_path / "saved.prefab").read_bytes()


def test_mixed_quantization_saves_converts_and_reloads(vulkan_device, tmp_path, capsys):
    mix = {"att": "int8", "ffn": "nf4", "att.value": "sf4"}
    model = rw.load_model(V6, device=vulkan_device, quant=mix)
    model.save(tmp_path / "saved.prefab")
    again = rw.load_model(tmp_path / "saved.prefab", device=vulkan_device)
    kinds = lambda m: [(l.key.quant.value, l.value.quant.value, l.ffn_key.quant.value) for l in m.layers]  # noqa: E731
    assert kinds(again) == kinds(model) == [("int8", "sf4", "nf4")] * len(model.layers)
    tokens = list(range(1, 30))
    assert np.array_equal(model.forward(tokens, model.new_state(), full=True),
                          again.forward(tokens, again.new_state(), full=True))  # fmt: skip
    out = tmp_path / "cli.prefab"
    assert main(["convert", "--quant", "att=int8,ffn=nf4,att.value=sf4", str(V6), str(out)]) == 0
    assert "prefab, att=int8,att.value=sf4,ffn=nf4" in capsys.readouterr().out
    assert out.read_bytes() == (tmp_path / "saved.prefab").read_bytes()
    assert main(["convert", "--quant", "att=int4", str(V6), str(tmp_path / "bad.prefab")]) == 2
    assert "att: unknown quantization 'int4'" in capsys.readouterr().err
    assert not (tmp_path / "bad.prefab").exists()


def _rewrite_metadata(path: Path, change) -> None:
    """Rewrite a safetensors file's ``__metadata__`` with ``change(meta)`` (the data stays)."""
    import json
    import struct

    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    change(header["__metadata__"])
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


def test_prefab_with_one_kind_for_all_still_loads(vulkan_device, tmp_path):
    """Files written before mixes (kind in ``quant`` only, ``[rows, k]`` per matrix) load as before."""
    import json

    model = rw.load_model(V7, device=vulkan_device, quant="nf4")
    path = tmp_path / "old.prefab"
    model.save(path)

    def old_style(meta):
        meta["quantized"] = json.dumps({k: v[:2] for k, v in json.loads(meta["quantized"]).items()})

    _rewrite_metadata(path, old_style)
    again = rw.load_model(path, device=vulkan_device)
    assert again.layers[0].key.quant.value == "nf4"
    tokens = [4, 9, 2, 7]
    assert np.array_equal(model.forward(tokens, model.new_state()), again.forward(tokens, again.new_state()))

    def no_kind(meta):
        meta["quant"] = "none"
    _rewrite_metadata(path, no_kind)
    with pytest.raises(rw.CheckpointError, match="without its kind"):
        rw.load_model(path, device=vulkan_device)
