"""Chat (state kept between turns, regenerate, save/load) and the generate/chat/batch/bench commands.

A fixture model gets a character-level byte-level BPE tokenizer.json built here over its vocabulary,
so none of this depends on the demo model. The chat REPL is also driven through tmux, as a user would.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rwkv_webgpu as rw
from rwkv_webgpu.chat import Chat, repl
from rwkv_webgpu.cli import main
from rwkv_webgpu.sampling import SamplingConfig

FIX = Path(__file__).resolve().parent / "fixtures" / "models"
V7 = FIX / "v7_L2_C64_V97.pth"
CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n:.,?!'-+/"
NEWLINE_ID = 1 + CHARS.index("\n")


def write_tokenizer(path: Path) -> Path:
    """Byte-level BPE with no merges: one token per character (id 0 ends the text), 74 of 97 ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from rwkv_webgpu.tokenizer.hf import _byte_level_chars

    byte_char = {b: c for c, b in _byte_level_chars().items()}
    vocab = {"<|endoftext|>": 0, **{byte_char[ord(c)]: i + 1 for i, c in enumerate(CHARS)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture(scope="module")
def model(vulkan_device, tokenizer_json):
    return rw.load_model(V7, device=vulkan_device, tokenizer=tokenizer_json)


def assert_states_close(a, b, atol=1e-5):
    x, y = a.to_numpy(), b.to_numpy()
    for k in x:
        np.testing.assert_allclose(x[k], y[k], atol=atol, err_msg=k)


def chat_of(model, seed=7, **kw) -> Chat:
    cfg = SamplingConfig(seed=seed, temperature=1.0, banned={NEWLINE_ID})
    return Chat(model, sampling=cfg, max_tokens=kw.pop("max_tokens", 6), **kw)


# -- the Chat object ---------------------------------------------------------------------------------
def test_tokenizer_round_trip(model):
    text = "User: Hi there!\n\nAssistant:"
    assert model.tokenizer.decode(model.tokenizer.encode(text)) == text
    assert len(model.tokenizer.encode(text)) == len(text)


def test_second_turn_feeds_only_its_tokens_and_equals_the_whole_history(model):
    chat = chat_of(model, system="Be brief.")
    chat.send("Hello")
    fed: list[int] = []
    forward, forward_sample = model.forward, model.forward_sample  # tokens fed either way (GPU sampling)
    model.forward = lambda ids, state, **kw: fed.extend(ids) or forward(ids, state, **kw)
    model.forward_sample = lambda ids, state, *a, **kw: fed.extend(ids) or forward_sample(ids, state, *a, **kw)
    try:
        before = len(chat.tokens)
        answer = chat.send("How are you?")
    finally:
        del model.forward, model.forward_sample
    assert fed == chat.tokens[before:]  # no token of the history was fed again
    turn = model.tokenizer.decode(chat.tokens[before:])
    assert "How are you?\n\nAssistant:" in turn and "Hello" not in turn
    assert chat.turns[-1].assistant == answer.strip()
    whole = model.new_state()
    model.forward(chat.tokens, whole)
    assert_states_close(chat.state, whole)
    history = model.tokenizer.decode(chat.tokens)
    assert history.startswith("Be brief.\n\nUser: Hello\n\nAssistant:")


def test_regenerate_with_the_same_seed_gives_the_first_answer(model):
    chat = chat_of(model, seed=5)
    chat.send("Hi")
    first = chat.send("Tell me more")
    state_after_first = chat.state.clone()
    again = chat.regenerate(seed=5)
    assert again == first
    assert_states_close(chat.state, state_after_first)
    assert [t.user for t in chat.turns] == ["Hi", "Tell me more"]
    other = chat.regenerate()  # a new draw
    assert other != first
    assert len(chat.turns) == 2 and chat.turns[-1].assistant == other.strip()


def test_same_seed_same_conversation(model):
    a, b = chat_of(model, seed=9), chat_of(model, seed=9)
    assert [a.send("One"), a.send("Two")] == [b.send("One"), b.send("Two")]
    assert chat_of(model, seed=10).send("One") != chat_of(model, seed=9).send("One")


def test_save_and_load_a_conversation(model, tmp_path):
    chat = chat_of(model, seed=3)
    chat.send("Hello")
    first = chat.send("Again")
    side = chat.save(tmp_path / "conv.state")
    assert side == tmp_path / "conv.state.json"
    meta = json.loads(side.read_text())
    assert [t["user"] for t in meta["turns"]] == ["Hello", "Again"]
    other = chat_of(model, seed=3)
    other.load(tmp_path / "conv.state")
    assert other.tokens == chat.tokens and other.turns == chat.turns
    assert_states_close(other.state, chat.state)
    assert other.regenerate(seed=3) == first  # the state before the last answer came back too
    nxt = chat.send("Third")
    other.regenerate(seed=3)
    assert other.send("Third") == nxt
    with pytest.raises(rw.CheckpointError):
        other.load(tmp_path / "missing.state")


def test_regenerate_needs_an_answer_and_chat_needs_a_tokenizer(model, vulkan_device):
    with pytest.raises(rw.RWKVError, match="regenerate"):
        chat_of(model).regenerate()
    with pytest.raises(rw.RWKVError, match="tokenizer"):
        Chat(rw.load_model(V7, device=vulkan_device))


def test_repl_commands(model, tmp_path):
    lines = iter(["Hello", "+ 7", "+", "/save " + str(tmp_path / "c"), "/load " + str(tmp_path / "c"),
                  "/load " + str(tmp_path / "nope"), "+ x", "/help", "/reset", "-", "never read"])  # fmt: skip
    out = io.StringIO()
    chat = chat_of(model, seed=7)
    assert repl(chat, lambda prompt: next(lines), out) == 0
    text = out.getvalue()
    answers = [line for line in text.splitlines() if line.startswith("Assistant:")]
    # "+ 7" with the chat's seed gives the first answer again
    assert len(answers) == 3 and answers[0] == answers[1]
    for said in ("saved the conversation", "loaded", "error:", "/save PATH"):
        assert said in text
    assert chat.turns == []  # /reset
    assert next(lines) == "never read"  # "-" quit


# -- the command line, in this process ------------------------------------------------------------------
def cli(*args: str) -> list[str]:
    return ["--adapter", "vulkan", *args]


@pytest.mark.parametrize("command", ["generate", "chat", "batch", "bench"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and f"rwkv-webgpu {command}" in out


def test_generate_with_stop_string(vulkan_device, tokenizer_json, capsys):
    base = cli("generate", "--model", str(V7), "--tokenizer", str(tokenizer_json), "--prompt", "Hi",
               "--temperature", "0", "--max-tokens", "12", "--ban", "0")  # fmt: skip
    assert main(base) == 0
    full = capsys.readouterr().out[len("Hi") : -1]
    assert len(full) >= 8
    stop = full[5:7]
    assert (
        main(
            [*base, "--stop", stop, "--top-k", "5", "--min-p", "0.01", "--presence-penalty", "0.1"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out == "Hi" + full[: full.find(stop)] + "\n"


def test_batch_of_prompts_of_different_lengths(vulkan_device, tokenizer_json, capsys):
    prompts = ["A", "A longer prompt", "The longest prompt of the three, by far"]
    args = cli(
        "batch",
        "--model",
        str(V7),
        "--tokenizer",
        str(tokenizer_json),
        "--max-tokens",
        "4",
        "--seed",
        "1",
    )
    assert main(args + [a for p in prompts for a in ("--prompt", p)]) == 0
    out, err = capsys.readouterr()
    heads = [line for line in out.splitlines() if line.startswith("--- [")]
    assert len(heads) == 3
    for i, p in enumerate(prompts, 1):
        assert f"--- [{i}/3] {len(p)} prompt tokens" in out
        assert p in out
    assert "3 prompts" in err


def test_bench_reports_speeds_and_adapter(vulkan_device, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "web_rwkv_py", None)  # as if not installed
    out_json = tmp_path / "bench.json"
    args = cli("bench", "--model", str(V7), "--prompt-tokens", "20", "--tokens", "5", "--json", str(out_json),
               "--compare", "web-rwkv-py")  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"adapter: {vulkan_device.info.describe()}" in out
    assert "web-rwkv-py is not installed" in out
    doc = json.loads(out_json.read_text())
    ours = doc["runs"][0]
    assert (
        ours["engine"] == "rwkv-webgpu" and ours["prefill_tok_s"] > 0 and ours["decode_tok_s"] > 0
    )
    assert doc["prompt_tokens"] == 20 and doc["decode_tokens"] == 5 and doc["adapter"]


def test_bench_compare_with_web_rwkv_py(vulkan_device, tmp_path, capsys):
    from rwkv_webgpu.config import ModelInfo, Version
    from rwkv_webgpu.weights import save_safetensors
    from rwkv_webgpu.weights.detect import expected_shapes

    pytest.importorskip("web_rwkv_py")
    v7 = cli(
        "bench",
        "--model",
        str(V7),
        "--prompt-tokens",
        "4",
        "--tokens",
        "1",
        "--compare",
        "web-rwkv-py",
    )
    assert main(v7) == 0
    assert "V4-V6 only" in capsys.readouterr().out
    # web-rwkv 0.8 needs 4+ layers: a random V6 of that depth, converted to .st inside the command
    info = ModelInfo(
        Version.V6, 4, 64, 1, 64, 97, 96, lora_ranks=(("time_maa", 8), ("time_decay", 16))
    )
    rng = np.random.default_rng(0)
    path = tmp_path / "v6.safetensors"
    save_safetensors({k: (rng.standard_normal(s) * 0.3).astype(np.float16) for k, s in expected_shapes(info).items()},
                     str(path))  # fmt: skip
    out_json = tmp_path / "bench.json"
    assert main(cli("bench", "--model", str(path), "--prompt-tokens", "16", "--tokens", "4",
                    "--compare", "web-rwkv-py", "--json", str(out_json))) == 0  # fmt: skip
    runs = {r["engine"]: r for r in json.loads(out_json.read_text())["runs"]}
    assert runs["web-rwkv-py"].get("decode_tok_s", 0) > 0, runs["web-rwkv-py"]
    assert "web-rwkv-py" in capsys.readouterr().out
    # a quantized model is compared with web-rwkv-py quantized the same way
    assert main(cli("bench", "--model", str(path), "--prompt-tokens", "16", "--tokens", "4", "--quant", "int8",
                    "--compare", "web-rwkv-py", "--json", str(out_json))) == 0  # fmt: skip
    doc = json.loads(out_json.read_text())
    runs = {r["engine"]: r for r in doc["runs"]}
    assert doc["quant"] == "int8" and ", int8)" in capsys.readouterr().out
    assert runs["web-rwkv-py"]["quant"] == {"quant": 4, "quant_nf4": 0}
    assert runs["web-rwkv-py"].get("decode_tok_s", 0) > 0, runs["web-rwkv-py"]


@pytest.mark.parametrize("quant, layers, expect", [
    (None, None, {"quant": 0, "quant_nf4": 0}),
    ("int8", None, {"quant": 3, "quant_nf4": 0}),
    ("nf4", 2, {"quant": 0, "quant_nf4": 2}),
    ({"att": "nf4", "ffn": "nf4"}, None, {"quant": 0, "quant_nf4": 3}),
    ("nf4", [1], "no quantization like"),
    ("sf4", None, "no quantization like"),
    ("att=int8,ffn=nf4", None, "no quantization like"),
    ({"att": "int8"}, None, "no quantization like"),
])  # fmt: skip
def test_bench_peer_gets_the_same_quantization(vulkan_device, tmp_path, quant, layers, expect):
    import rwkv_webgpu as rw
    from rwkv_webgpu.speed import peer_quantization

    model = rw.load_model(FIX / "v6_L3_C48_V53.pth", device=vulkan_device, quant=quant, quant_layers=layers)
    got = peer_quantization(model)
    assert got == expect if isinstance(expect, dict) else expect in got
    model.save(tmp_path / "m.prefab")
    again = rw.load_model(tmp_path / "m.prefab", device=vulkan_device)
    assert "cannot read a prefab" in peer_quantization(again)


# -- the chat REPL in a terminal (tmux) ----------------------------------------------------------------
class Screen:
    def __init__(self, name: str):
        self.name = name

    def text(self) -> str:
        res = subprocess.run(["tmux", "capture-pane", "-p", "-J", "-S", "-", "-t", self.name],
                             check=False, capture_output=True, text=True)  # fmt: skip
        if res.returncode:
            raise AssertionError(f"the tmux session ended: {res.stderr}")
        return res.stdout

    def type(self, line: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", line], check=True)
        subprocess.run(["tmux", "send-keys", "-t", self.name, "Enter"], check=True)

    def wait_for(self, pred, timeout: float = 90.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            screen = self.text()
            if pred(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"timed out; the screen shows:\n{self.text()}")


def prompts_on(screen: str) -> int:
    return sum(1 for line in screen.splitlines() if line.startswith("User:"))


def test_chat_repl_in_tmux(vulkan_device, tokenizer_json, tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    name = f"rwkv-chat-{int(time.time() * 1000) % 10**9}"
    cmd = [sys.executable, "-m", "rwkv_webgpu", "--adapter", "vulkan", "chat", "--model", str(V7), "--tokenizer",
           str(tokenizer_json), "--seed", "7", "--max-tokens", "6", "--top-p", "1", "--frequency-penalty", "0",
           "--ban", str(NEWLINE_ID)]  # fmt: skip
    shell = " ".join(f"'{c}'" for c in cmd) + "; echo CHAT-EXITED $?; sleep 60"
    root = Path(__file__).resolve().parents[1]
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "200", "-y", "50", "-c", str(root), shell],
                   check=True)  # fmt: skip
    screen = Screen(name)
    try:
        screen.wait_for(lambda s: prompts_on(s) == 1)
        screen.type("Hello there")
        screen.wait_for(lambda s: prompts_on(s) == 2)
        screen.type("+ 7")
        screen.wait_for(lambda s: prompts_on(s) == 3)
        screen.type("+")
        screen.wait_for(lambda s: prompts_on(s) == 4)
        save = tmp_path / "conv.state"
        screen.type(f"/save {save}")
        screen.wait_for(lambda s: "saved the conversation" in s)
        screen.type(f"/load {save}")
        screen.wait_for(lambda s: "loaded " in s)
        screen.type("-")
        text = screen.wait_for(lambda s: "CHAT-EXITED" in s)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], check=False, capture_output=True)
    assert "CHAT-EXITED 0" in text
    answers = [line for line in text.splitlines() if line.startswith("Assistant:")]
    assert len(answers) == 3
    assert answers[0] == answers[1]  # "+ 7" regenerated the first answer (same seed)
    assert "User: Hello there" in text
    assert save.is_file() and (tmp_path / "conv.state.json").is_file()
    assert "loaded " + str(save) + ": 1 turn(s)" in text


def test_bad_sampling_option_is_a_clear_error(capsys):
    assert main(["generate", "--model", str(V7), "--prompt", "x", "--top-p", "2"]) == 2
    assert "--top-p must be in (0, 1]" in capsys.readouterr().err
