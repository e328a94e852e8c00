"""The rwkv-webgpu command, run as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rwkv_webgpu.cli import main

FIX = Path(__file__).resolve().parent / "fixtures"
V7 = sorted((FIX / "models").glob("v7_*.pth"))[0]


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("generate", "info", "convert", "adapters"):
        assert cmd in out


def test_info_prints_version_and_sizes(capsys):
    assert main(["info", str(V7)]) == 0
    out = capsys.readouterr().out
    assert "version:     v7" in out
    assert "layers:" in out and "vocabulary:" in out


def test_info_on_bad_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a model at all")
    assert main(["info", str(bad)]) == 2
    assert "bad.pth" in capsys.readouterr().err


def test_convert_then_info(tmp_path, capsys):
    dst = tmp_path / "m.st"
    assert main(["convert", str(V7), str(dst)]) == 0
    assert dst.is_file()
    assert main(["info", str(dst)]) == 0
    assert "version:     v7" in capsys.readouterr().out


def test_generate_token_ids_without_tokenizer_is_explained(vulkan_device, capsys):
    # fixtures have tiny vocabularies and no tokenizer: the CLI says so instead of failing deep inside
    code = main(["--adapter", "vulkan", "generate", "--model", str(V7), "--prompt", "hi", "--max-tokens", "3"])
    assert code == 2
    assert "tokenizer" in capsys.readouterr().err


def test_bad_chunk_size_is_a_clear_error(vulkan_device, capsys):
    code = main(["--adapter", "vulkan", "generate", "--model", str(V7), "--prompt", "hi", "--chunk-size", "0"])
    assert code == 2
    assert "token_chunk_size must be >= 1, got 0" in capsys.readouterr().err


def test_generate_with_seed_is_reproducible(vulkan_device, tmp_path):
    """Generation through the CLI with an HF tokenizer over the fixture's vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    import rwkv_webgpu as rw

    model = rw.load_model(V7, device=vulkan_device)
    vocab = {f"w{i}": i for i in range(model.info.num_vocab)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w1"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    cmd = [sys.executable, "-m", "rwkv_webgpu", "--adapter", "vulkan", "generate", "--model", str(V7),
           "--tokenizer", str(path), "--prompt", "w3 w5 w7", "--max-tokens", "8", "--seed", "4"]  # fmt: skip
    runs = [subprocess.run(cmd, capture_output=True, text=True, timeout=120) for _ in range(2)]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout
    assert runs[0].stdout.startswith("w3 w5 w7")
    assert len(runs[0].stdout) > len("w3 w5 w7\n")


def test_generate_api_greedy_matches_argmax(vulkan_device):
    import rwkv_webgpu as rw

    model = rw.load_model(V7, device=vulkan_device)
    state = model.new_state()
    logits = model.forward([3, 5, 7], state)
    expect = []
    for _ in range(4):
        nxt = int(np.argmax(logits))
        expect.append(nxt)
        logits = model.forward([nxt], state)
    out = rw.generate(model, [3, 5, 7], max_tokens=4, sampling=rw.SamplingConfig(temperature=0), stop_at_eos=False)
    assert out.split() == [str(t) for t in expect]


def test_generate_with_a_quantization_mix(vulkan_device, capsys):
    """--quant on the commands that load a model (the bundled demo model here)."""
    args = ["--adapter", "vulkan", "generate", "--prompt", "The", "--max-tokens", "4", "--temperature", "0"]
    assert main([*args, "--quant", "att=int8,ffn=nf4"]) == 0
    assert capsys.readouterr().out.startswith("The")
    assert main([*args, "--quant", "ffn=nf5"]) == 2
    assert "ffn: unknown quantization 'nf5'" in capsys.readouterr().err
