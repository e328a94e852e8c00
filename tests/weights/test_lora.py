"""LoRA merging at load time, checked against a float64 numpy merge of the raw files.

Fixtures come from scripts/make_lora_fixtures.py (LoRAs for models/v7_L2_C64_V97.pth); the
reference reads ``.pth`` through ``open_checkpoint`` and ``.st`` through the reference
``safetensors`` package, undoing web-rwkv's renames and ``lora.0`` transpose by hand.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from rwkv_webgpu.errors import CheckpointError, ShapeError
from rwkv_webgpu.weights import open_checkpoint, save_safetensors
from rwkv_webgpu.weights.lora import LoraCheckpoint, LoraSpec, read_lora, with_loras

FIXTURES = Path(__file__).parents[1] / "fixtures"
LORA = FIXTURES / "lora"
BASE = FIXTURES / "models" / "v7_L2_C64_V97.pth"
C, F = 64, 96


def _raw(path: Path) -> dict[str, np.ndarray]:
    """A LoRA file's tensors in float64 under official names (lora_A as (rank, in))."""
    if path.suffix == ".pth":
        with open_checkpoint(path) as ckpt:
            return {n: ckpt.load(n, np.float64) for n in ckpt.names()}
    out = {}
    with safe_open(str(path), framework="numpy") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            t = f.get_tensor(name).astype(np.float64)
            official = name.replace("lora.0", "lora_A").replace("lora.1", "lora_B")
            out[official] = t.T if "lora.0" in name else t
    return out


def _base() -> dict[str, np.ndarray]:
    with open_checkpoint(BASE) as ckpt:
        return {n: ckpt.load(n, np.float64) for n in ckpt.names()}


def _target(name: str) -> tuple[str, str | None]:
    for part in ("A", "B"):
        for tail, keep in ((f".weight.lora_{part}", ".weight"), (f".lora_{part}", ".weight")):
            if name.endswith(tail):
                return name[: -len(tail)] + keep, part
    return name, None


def _merge(
    base: dict[str, np.ndarray], loras: list[tuple[dict[str, np.ndarray], LoraSpec]]
) -> dict[str, np.ndarray]:
    """The float64 oracle: blend full tensors, then W += alpha/rank * B @ A, LoRA by LoRA."""
    w = {k: v.copy() for k, v in base.items()}
    for raw, spec in loras:
        full = {n: t for n, t in raw.items() if _target(n)[1] is None}
        pairs: dict[str, dict[str, np.ndarray]] = {}
        for n, t in raw.items():
            target, part = _target(n)
            if part is not None:
                pairs.setdefault(target, {})[part] = t
        for name, value in w.items():
            if not any(fnmatch.fnmatchcase(name, p) for p in spec.patterns):
                continue
            if name in full:
                value += spec.blend * (full[name].reshape(value.shape) - value)
            if name in pairs:
                a, b = pairs[name]["A"], pairs[name]["B"]
                rank = a.shape[0]
                alpha = rank if spec.alpha is None else spec.alpha
                value += (alpha / rank) * (b @ a)
    return w


def _assert_merged(
    ckpt: LoraCheckpoint, want: dict[str, np.ndarray], base: dict[str, np.ndarray]
) -> None:
    changed = 0
    for name, ref in want.items():
        got32 = ckpt.load(name, np.float32)
        got16 = ckpt.load(name, np.float16)
        assert got32.dtype == np.float32 and got16.dtype == np.float16
        assert got32.shape == ref.shape and got32.flags.c_contiguous
        scale = max(float(np.abs(ref).max()), 1e-30)
        assert np.abs(got32 - ref).max() <= 1e-6 * scale, name
        # within fp16 rounding: one fp16 ulp of the reference (normal range) or 2**-24
        np.testing.assert_allclose(
            got16.astype(np.float64), ref, rtol=2**-10, atol=2**-24, err_msg=name
        )
        if not np.array_equal(ref, base[name]):
            changed += 1
        else:
            np.testing.assert_array_equal(got32, ref, err_msg=name)
    assert changed > 0


def _open(*specs: LoraSpec) -> LoraCheckpoint:
    ckpt = with_loras(open_checkpoint(BASE), specs)
    assert isinstance(ckpt, LoraCheckpoint)
    return ckpt


@pytest.mark.parametrize("file", ["v7_rwkvlm.pth", "v7_peft.pth", "v7_webrwkv.st"])
@pytest.mark.parametrize("alpha", [None, 8.0])
def test_fixture_merge(file: str, alpha: float | None) -> None:
    spec = LoraSpec(LORA / file, alpha=alpha)
    base = _base()
    want = _merge(base, [(_raw(LORA / file), spec)])
    with _open(spec) as ckpt:
        _assert_merged(ckpt, want, base)
        assert set(ckpt.merged()) == {n for n in base if not np.array_equal(want[n], base[n])}


def test_namings_and_formats_agree() -> None:
    """The RWKV-LM .pth and its web-rwkv .st conversion merge to the same weights (fp16-close)."""
    with _open(LoraSpec(LORA / "v7_rwkvlm.pth")) as a, _open(LoraSpec(LORA / "v7_webrwkv.st")) as b:
        assert a.merged() and sorted(a.merged()) == sorted(b.merged())
        for name in a.merged():
            np.testing.assert_allclose(
                b.load(name), a.load(name), rtol=1e-3, atol=1e-4, err_msg=name
            )


def test_several_loras_in_order(tmp_path: Path) -> None:
    # a third LoRA that blends x_k again and touches att.key again: order matters for the blend
    rng = np.random.default_rng(3)
    third = {
        "blocks.1.att.x_k": rng.random((C,), dtype=np.float32),  # (C,) for a (1, 1, C) base
        "blocks.0.att.key.weight.lora_A": rng.standard_normal((3, C), dtype=np.float32),
        "blocks.0.att.key.weight.lora_B": rng.standard_normal((C, 3), dtype=np.float32),
    }
    path = tmp_path / "third.safetensors"
    save_safetensors(third, str(path))
    specs = [
        LoraSpec(LORA / "v7_rwkvlm.pth", alpha=2.0, blend=0.5),
        LoraSpec(LORA / "v7_peft.pth", alpha=1.0),
        LoraSpec(path, alpha=0.3, blend=0.5),
    ]
    base = _base()
    want = _merge(base, [(_raw(Path(s.path)), s) for s in specs])
    with _open(*specs) as ckpt:
        _assert_merged(ckpt, want, base)
    # the blend is not commutative: reversed order gives another x_k
    with _open(*reversed(specs)) as rev:
        assert not np.allclose(rev.load("blocks.1.att.x_k"), want["blocks.1.att.x_k"])


@pytest.mark.parametrize(
    "patterns",
    [("blocks.1.*",), "*.att.key.weight", ("*.ffn.*", "blocks.0.att.ln_x.*"), ()],
)
def test_patterns_select_tensors(patterns: tuple[str, ...] | str) -> None:
    spec = LoraSpec(LORA / "v7_rwkvlm.pth", patterns=patterns)
    assert isinstance(spec.patterns, tuple)
    base = _base()
    want = _merge(base, [(_raw(LORA / "v7_rwkvlm.pth"), spec)])
    with _open(spec) as ckpt:
        merged = set(ckpt.merged())
        assert merged == {n for n in base if not np.array_equal(want[n], base[n])}
        for name in base:
            np.testing.assert_allclose(
                ckpt.load(name), want[name], rtol=1e-6, atol=1e-7, err_msg=name
            )
    expected = {
        ("blocks.1.*",): {"blocks.1.att.key.weight", "blocks.1.att.value.weight", "blocks.1.ffn.key.weight", "blocks.1.att.x_k"},
        "*.att.key.weight": {"blocks.0.att.key.weight", "blocks.1.att.key.weight"},
        ("*.ffn.*", "blocks.0.att.ln_x.*"): {"blocks.0.ffn.key.weight", "blocks.1.ffn.key.weight", "blocks.0.att.ln_x.weight"},
        (): set(),
    }  # fmt: skip
    assert merged == expected[patterns]


def test_blend_rule(tmp_path: Path) -> None:
    """Full tensors blend as base + blend * (lora - base): 1 replaces, 0 keeps the base."""
    base = _base()
    path = LORA / "v7_rwkvlm.pth"
    lora_xk = _raw(path)["blocks.1.att.x_k"]
    for blend in (1.0, 0.25, 0.0):
        with _open(LoraSpec(path, blend=blend, patterns=("*.x_k",))) as ckpt:
            got = ckpt.load("blocks.1.att.x_k", np.float64)
        ref = base["blocks.1.att.x_k"] + blend * (lora_xk - base["blocks.1.att.x_k"])
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    with _open(LoraSpec(path, patterns=("*.x_k",))) as ckpt:
        np.testing.assert_array_equal(ckpt.load("blocks.1.att.x_k", np.float64), lora_xk)


def test_alpha_from_metadata(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    a, b = (
        rng.standard_normal((4, C), dtype=np.float32),
        rng.standard_normal((C, 4), dtype=np.float32),
    )
    path = tmp_path / "meta.safetensors"
    save_safetensors(
        {"blocks.0.att.value.lora_A": a, "blocks.0.att.value.lora_B": b},
        str(path),
        {"lora_alpha": "2"},
    )
    w = _base()["blocks.0.att.value.weight"]
    assert read_lora(LoraSpec(path)).alpha == 2.0
    with _open(LoraSpec(path)) as ckpt:  # 2 / rank 4
        np.testing.assert_allclose(
            ckpt.load("blocks.0.att.value.weight"), w + 0.5 * (b @ a), rtol=1e-6, atol=1e-6
        )
    with _open(LoraSpec(path, alpha=8.0)) as ckpt:  # the spec wins
        np.testing.assert_allclose(
            ckpt.load("blocks.0.att.value.weight"), w + 2.0 * (b @ a), rtol=1e-6, atol=1e-6
        )


def test_hf_peft_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    a, b = (
        rng.standard_normal((2, C), dtype=np.float32),
        rng.standard_normal((F, 2), dtype=np.float32),
    )
    path = tmp_path / "adapter_model.safetensors"
    prefix = "base_model.model.blocks.1.ffn.key"
    save_safetensors({f"{prefix}.lora_A.weight": a, f"{prefix}.lora_B.weight": b}, str(path))
    with _open(LoraSpec(path)) as ckpt:
        assert ckpt.merged() == ["blocks.1.ffn.key.weight"]
        np.testing.assert_allclose(
            ckpt.load("blocks.1.ffn.key.weight"),
            _base()["blocks.1.ffn.key.weight"] + b @ a,
            rtol=1e-6,
            atol=1e-6,
        )


def test_webrwkv_renamed_vectors_resolve_against_base(tmp_path: Path) -> None:
    """A web-rwkv V6 LoRA whose own names do not reveal its renames (no time_mix_x, no ln_x)."""
    base_path = FIXTURES / "models" / "v6_L2_C64_V67.pth"
    with open_checkpoint(base_path) as base:
        mix_k, first = base.load("blocks.0.att.time_maa_k"), base.load("blocks.1.att.time_faaaa")
    rng = np.random.default_rng(6)
    new_k, new_first = rng.random(mix_k.shape, np.float32), rng.random(first.shape, np.float32)
    path = tmp_path / "v6.st"
    save_safetensors(
        {
            "blocks.0.att.time_mix_k": new_k.astype(np.float16),
            "blocks.1.att.time_first": new_first.astype(np.float16),
        },
        str(path),
    )
    with with_loras(open_checkpoint(base_path), [LoraSpec(path)]) as ckpt:
        assert sorted(ckpt.merged()) == ["blocks.0.att.time_maa_k", "blocks.1.att.time_faaaa"]
        np.testing.assert_array_equal(
            ckpt.load("blocks.0.att.time_maa_k"), new_k.astype(np.float16).astype(np.float32)
        )
        np.testing.assert_array_equal(
            ckpt.load("blocks.1.att.time_faaaa"), new_first.astype(np.float16).astype(np.float32)
        )


def test_checkpoint_interface() -> None:
    from rwkv_webgpu.weights.detect import detect

    with open_checkpoint(BASE) as plain, _open(LoraSpec(LORA / "v7_rwkvlm.pth")) as ckpt:
        assert ckpt.names() == plain.names() and len(ckpt) == len(plain)
        assert ckpt.path == plain.path and ckpt.layout == plain.layout
        assert "blocks.0.att.key.weight" in ckpt and "blocks.0.att.key.lora_A" not in ckpt
        assert all(ckpt.shape(n) == plain.shape(n) for n in plain.names())
        assert ckpt.dtype("blocks.0.att.key.weight") == "f32" and ckpt.dtype("emb.weight") == "bf16"
        assert ckpt.quantized("blocks.0.att.key.weight") is None
        assert detect(ckpt) == detect(plain)
        np.testing.assert_array_equal(
            ckpt.load("head.weight", np.float16), plain.load("head.weight", np.float16)
        )
    assert with_loras(plain, []) is plain


# -- errors -----------------------------------------------------------------------------------
def _write(tmp_path: Path, tensors: dict[str, np.ndarray], name: str = "bad.safetensors") -> Path:
    path = tmp_path / name
    save_safetensors({k: v.astype(np.float32) for k, v in tensors.items()}, str(path))
    return path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        read_lora(LoraSpec(tmp_path / "nope.pth"))
    with pytest.raises(CheckpointError, match="no such file"):
        with_loras(open_checkpoint(BASE), [LoraSpec(tmp_path / "nope.pth")])


def test_name_the_base_lacks(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"blocks.7.att.key.lora_A": np.ones((2, C)), "blocks.7.att.key.lora_B": np.ones((C, 2))},
    )
    with pytest.raises(CheckpointError, match=r"bad\.safetensors.*blocks\.7\.att\.key\.weight"):
        _open(LoraSpec(path))
    with _open(LoraSpec(path, patterns=("blocks.0.*",))) as ckpt:  # not selected: ignored
        assert ckpt.merged() == []


@pytest.mark.parametrize(
    ("tensors", "what"),
    [
        (
            {
                "blocks.0.att.key.lora_A": np.ones((2, C + 1)),
                "blocks.0.att.key.lora_B": np.ones((C, 2)),
            },
            "key",
        ),
        (
            {
                "blocks.0.ffn.key.lora_A": np.ones((2, C)),
                "blocks.0.ffn.key.lora_B": np.ones((C, 2)),
            },
            "ffn.key",
        ),
        (
            {
                "blocks.0.att.key.lora_A": np.ones((2, C)),
                "blocks.0.att.key.lora_B": np.ones((C, 3)),
            },
            "rank|pair",
        ),
        ({"blocks.0.att.x_k": np.ones((C + 1,))}, "x_k"),
        ({"blocks.0.att.w1": np.ones((8, C))}, "w1"),  # a matrix must match exactly
        ({"blocks.0.att.r_k": np.ones((64,))}, "r_k"),  # (H, N) is not a vector
        (
            {
                "blocks.0.att.key.weight.lora_A": np.ones((2, 2, C)),
                "blocks.0.att.key.weight.lora_B": np.ones((C, 2)),
            },
            "pair",
        ),
    ],
)
def test_shape_errors(tmp_path: Path, tensors: dict[str, np.ndarray], what: str) -> None:
    path = _write(tmp_path, tensors)
    with pytest.raises(ShapeError, match=r"bad\.safetensors") as e:
        _open(LoraSpec(path))
    assert any(part in str(e.value) for part in what.split("|"))


def test_half_a_pair(tmp_path: Path) -> None:
    path = _write(tmp_path, {"blocks.0.att.key.lora_A": np.ones((2, C))})
    with pytest.raises(CheckpointError, match="no matching lora_B"):
        read_lora(LoraSpec(path))


def test_bad_spec() -> None:
    with pytest.raises(ValueError, match="finite"):
        LoraSpec("x.pth", alpha=float("nan"))


# -- end to end: a model loaded through LoraCheckpoint = a model from pre-merged weights --------
def _load(ckpt: object, device: object) -> object:
    from rwkv_webgpu.loader import _model_class
    from rwkv_webgpu.weights.detect import detect

    info = detect(ckpt)  # type: ignore[arg-type]
    model = _model_class(info.version)(info, device, token_chunk_size=16)  # type: ignore[arg-type]
    model.load_common(ckpt)
    model.load_layers(ckpt, None)
    return model


def test_model_logits_match_numpy_merge(vulkan_device: object, tmp_path: Path) -> None:
    specs = [
        LoraSpec(LORA / "v7_rwkvlm.pth", alpha=6.0),
        LoraSpec(LORA / "v7_peft.pth", alpha=3.0, patterns=("blocks.0.*",)),
    ]
    merged = _merge(_base(), [(_raw(Path(s.path)), s) for s in specs])
    merged_path = tmp_path / "merged.safetensors"
    save_safetensors(
        {k: v.astype(np.float32) for k, v in merged.items()},
        str(merged_path),
        {"rwkv_layout": "official"},
    )

    tokens = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43, 38, 32, 79, 50, 28, 8, 41]
    logits = {}
    for key, open_ in (
        ("lora", lambda: with_loras(open_checkpoint(BASE), specs)),
        ("numpy", lambda: open_checkpoint(merged_path)),
        ("base", lambda: open_checkpoint(BASE)),
    ):
        with open_() as ckpt:
            model = _load(ckpt, vulkan_device)
        logits[key] = model.forward(tokens, model.new_state(), full=True)  # type: ignore[attr-defined]
    assert logits["lora"].shape == (len(tokens), 97)
    diff = np.abs(logits["lora"] - logits["numpy"]).max()
    effect = np.abs(logits["lora"] - logits["base"]).max()
    assert diff <= 1e-4 * np.abs(logits["numpy"]).max(), diff
    assert effect > 100 * max(diff, 1e-4), (effect, diff)
