"""The official <-> web-rwkv name table and the layout decision."""

from __future__ import annotations

import pytest

from rwkv_webgpu.errors import CheckpointError
from rwkv_webgpu.weights.names import (
    LAYOUT_KEY,
    Layout,
    WebRwkvNames,
    detect_layout,
    is_transposed,
    to_webrwkv,
)

from . import synthetic as syn


@pytest.mark.parametrize(
    "official, webrwkv, transposed",
    [
        ("blocks.0.ln1.weight", "blocks.0.ln1.weight", False),
        ("blocks.0.att.time_first", "blocks.0.att.time_first", False),  # V4 / RWKV-5.0
        ("blocks.0.att.time_mix_k", "blocks.0.att.time_mix_k", False),  # V4 / V5
        ("blocks.0.att.time_faaaa", "blocks.0.att.time_first", False),
        ("blocks.0.att.time_maa_x", "blocks.0.att.time_mix_x", False),
        ("blocks.0.att.time_maa_w1", "blocks.0.att.time_mix_w1", True),
        ("blocks.0.att.time_maa_w2", "blocks.0.att.time_mix_w2", True),
        ("blocks.0.att.time_decay_w1", "blocks.0.att.time_decay_w1", True),
        ("blocks.0.ffn.time_maa_k", "blocks.0.ffn.time_mix_k", False),
        ("blocks.1.att.v1", "blocks.1.att.v1", True),
        ("blocks.1.att.a2", "blocks.1.att.a2", True),
        ("blocks.1.att.g1", "blocks.1.att.g1", True),
        ("blocks.1.att.w0", "blocks.1.att.w0", False),
        ("blocks.1.att.r_k", "blocks.1.att.r_k", False),
        ("blocks.2.att.time_state", "blocks.2.att.time_state", True),
        ("blocks.2.att.key.lora_A", "blocks.2.att.key.lora.0", True),
        ("blocks.2.att.key.lora_B", "blocks.2.att.key.lora.1", False),
    ],
)
def test_forward_table(official: str, webrwkv: str, transposed: bool) -> None:
    assert to_webrwkv(official) == webrwkv
    assert is_transposed(webrwkv) == transposed


def _st_shapes(official: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    out = {}
    for name, shape in official.items():
        st = to_webrwkv(name)
        out[st] = (*shape[:-2], shape[-1], shape[-2]) if is_transposed(st) else shape
    return out


@pytest.mark.parametrize(
    "shapes", [syn.v4(), syn.v5("5.0"), syn.v5("5.1"), syn.v5("5.2"), syn.v6(True), syn.v7(True)]
)
def test_reverse_mapping_round_trips(shapes: dict[str, tuple[int, ...]]) -> None:
    st = _st_shapes(shapes)
    mapping = WebRwkvNames(st).official_of
    back = {mapping[n] for n in st}
    if any(".att.time_first" in n for n in shapes) and any(".ln_x." in n for n in shapes):
        # RWKV-5.0's time_first is read back as the bonus time_faaaa (convert stores exp())
        shapes = {k.replace("time_first", "time_faaaa"): s for k, s in shapes.items()}
    assert back == set(shapes)


@pytest.mark.parametrize(
    "official, suffix, want",
    [
        (syn.v4(), ".st", Layout.WEB_RWKV),  # identical layouts: either way is a no-op
        (syn.v5("5.2"), ".safetensors", Layout.OFFICIAL),
        (syn.v6(), ".safetensors", Layout.OFFICIAL),
        (syn.v7(), ".st", Layout.OFFICIAL),  # w1 is (C, D): official orientation
    ],
)
def test_official_files(official: dict, suffix: str, want: Layout) -> None:
    assert detect_layout(official, suffix) is want


@pytest.mark.parametrize("make", [lambda: syn.v5("5.2"), syn.v6, syn.v7])
@pytest.mark.parametrize("suffix", [".st", ".safetensors"])
def test_webrwkv_files(make, suffix: str) -> None:  # type: ignore[no-untyped-def]
    assert detect_layout(_st_shapes(make()), suffix) is Layout.WEB_RWKV


def test_ties_and_metadata() -> None:
    state_only = {"blocks.0.att.time_state": (2, 4, 4)}
    assert detect_layout(state_only, ".st") is Layout.WEB_RWKV
    assert detect_layout(state_only, ".safetensors") is Layout.OFFICIAL
    assert detect_layout(state_only, ".safetensors", {LAYOUT_KEY: "web-rwkv"}) is Layout.WEB_RWKV
    five_oh = syn.v5("5.0")  # (H,) log-space time_first: official unless named .st
    assert detect_layout(five_oh, ".safetensors") is Layout.OFFICIAL
    assert detect_layout(five_oh, ".st") is Layout.WEB_RWKV


def test_reverse_mapping_depends_on_the_file() -> None:
    v4 = WebRwkvNames(syn.v4()).official_of
    assert v4["blocks.0.att.time_first"] == "blocks.0.att.time_first"
    assert v4["blocks.0.ffn.time_mix_k"] == "blocks.0.ffn.time_mix_k"
    v5 = WebRwkvNames(_st_shapes(syn.v5("5.2"))).official_of
    assert v5["blocks.0.att.time_first"] == "blocks.0.att.time_faaaa"
    assert v5["blocks.0.att.time_mix_g"] == "blocks.0.att.time_mix_g"
    v6 = WebRwkvNames(_st_shapes(syn.v6())).official_of
    assert v6["blocks.0.ffn.time_mix_k"] == "blocks.0.ffn.time_maa_k"
    assert v6["blocks.0.att.time_first"] == "blocks.0.att.time_faaaa"


def test_collisions_rejected() -> None:
    with pytest.raises(CheckpointError):
        WebRwkvNames(["a.lora.0", "a.lora_A"])
