"""Version and dimension detection on synthetic state dicts (see synthetic.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rwkv_webgpu.config import Version
from rwkv_webgpu.errors import CheckpointError, ShapeError, UnknownVersionError
from rwkv_webgpu.weights import detect, expected_shapes, open_checkpoint, save_safetensors

from . import synthetic as syn

CASES = {
    "v4": (syn.v4(), Version.V4, "", 1, syn.C, syn.F, ()),
    "5.0": (syn.v5("5.0"), Version.V5, "5.0", syn.H, syn.N, syn.F, ()),
    "5.1": (syn.v5("5.1"), Version.V5, "5.1", syn.H, syn.N, syn.F, ()),
    "5.2": (syn.v5("5.2"), Version.V5, "5.2", syn.H, syn.N, syn.F, ()),
    "v6": (
        syn.v6(), Version.V6, "", syn.H, syn.N, syn.F,
        (("time_maa", syn.DM), ("time_decay", syn.DD)),
    ),
    "v7": (
        syn.v7(), Version.V7, "", syn.H, syn.N, 4 * syn.C,
        (("w", syn.DW), ("a", syn.DA), ("g", syn.DG), ("v", syn.DV)),
    ),
}  # fmt: skip


def _zeros_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    save_safetensors({k: np.zeros(s, np.float16) for k, s in shapes.items()}, str(path))
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_detect(tmp_path: Path, case: str) -> None:
    shapes, version, sub, h, n, f, ranks = CASES[case]
    with open_checkpoint(_zeros_file(tmp_path / "m.safetensors", shapes)) as ckpt:
        info = detect(ckpt)
    assert (info.version, info.sub_version) == (version, sub)
    assert (info.num_layer, info.num_emb, info.num_vocab) == (syn.L, syn.C, syn.V)
    assert (info.num_head, info.head_size, info.ffn_size) == (h, n, f)
    assert info.lora_ranks == ranks and not info.has_time_state
    assert info.lora_rank(ranks[0][0]) == ranks[0][1] if ranks else info.lora_rank("w") == 0
    expected = expected_shapes(info)
    if sub == "5.0":  # the only layout naming its bonus time_first
        expected = {k.replace("time_faaaa", "time_first"): s for k, s in expected.items()}
    assert expected == shapes


@pytest.mark.parametrize("make", [syn.v6, syn.v7])
def test_time_state(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    with open_checkpoint(_zeros_file(tmp_path / "s.safetensors", make(time_state=True))) as c:
        info = detect(c)
    assert info.has_time_state
    assert expected_shapes(info)["blocks.1.att.time_state"] == (syn.H, syn.N, syn.N)


@pytest.mark.parametrize(
    "make, name, bad",
    [
        (syn.v4, "blocks.1.att.time_mix_v", (1, syn.C)),
        (lambda: syn.v5("5.2"), "blocks.1.att.time_decay", (syn.H,)),
        (syn.v6, "blocks.0.att.time_maa_w2", (5, syn.C, syn.DM)),
        (syn.v7, "blocks.1.att.v2", (syn.C, syn.DV)),
        (syn.v7, "head.weight", (syn.V + 1, syn.C)),
    ],
)
def test_wrong_shape(tmp_path: Path, make, name: str, bad: tuple[int, ...]) -> None:  # type: ignore[no-untyped-def]
    shapes = make()
    good = shapes[name]
    shapes[name] = bad
    with (
        open_checkpoint(_zeros_file(tmp_path / "w.safetensors", shapes)) as ckpt,
        pytest.raises(ShapeError) as err,
    ):
        detect(ckpt)
    assert name in str(err.value) and str(good) in str(err.value) and str(bad) in str(err.value)


@pytest.mark.parametrize(
    "make, name",
    [
        (syn.v7, "blocks.1.att.v1"),
        (syn.v7, "blocks.0.att.g1"),
        (syn.v6, "blocks.0.att.time_maa_w1"),
    ],
)
def test_transposed_lora(tmp_path: Path, make, name: str) -> None:  # type: ignore[no-untyped-def]
    shapes = make()
    shapes[name] = shapes[name][::-1]
    with (
        open_checkpoint(_zeros_file(tmp_path / "t.safetensors", shapes)) as ckpt,
        pytest.raises(ShapeError, match=rf"{name}.*should be \({syn.C}, .*rank\)"),
    ):
        detect(ckpt)


def test_missing_tensor(tmp_path: Path) -> None:
    shapes = syn.v7()
    del shapes["blocks.1.ffn.value.weight"]
    with (
        open_checkpoint(_zeros_file(tmp_path / "m.safetensors", shapes)) as ckpt,
        pytest.raises(CheckpointError, match=r"blocks\.1\.ffn\.value\.weight"),
    ):
        detect(ckpt)


def test_unknown_layout(tmp_path: Path) -> None:
    shapes = {"model.layers.0.mlp.weight": (4, 4), "lm_head.weight": (8, 4)}
    with (
        open_checkpoint(_zeros_file(tmp_path / "u.safetensors", shapes)) as ckpt,
        pytest.raises(UnknownVersionError, match="lm_head.weight"),
    ):
        detect(ckpt)
