#!/usr/bin/env python3
"""Generate golden test fixtures for rwkv-webgpu.

For each RWKV version (V4, V5.0, V5.1, V5.2, V6, V7) this script builds a tiny
checkpoint with random weights but the real tensor layout, saves it as an
official-style ``.pth`` (``torch.save(state_dict)``, bfloat16), and runs the
official ``rwkv`` pip package (fp32, CPU) on a random token sequence to record
reference logits.

Usage
-----
    python scripts/make_fixtures.py                 # committed default set
    python scripts/make_fixtures.py --version v7 --layers 3 --emb 128 \\
        --vocab 311 --head-size 64 --seed 5 --tokens 24 --out /tmp/fx

Only this script needs ``torch`` and ``rwkv``; the test suite reads the
``.pth`` / ``.npz`` files without them.

The default run also writes the state-tuned ``st_*`` fixtures (``ST_CONFIGS``):
V5.2 and V6 models whose ``.pth`` holds ``blocks.{i}.att.time_state``, and a V7
model with a separate ``st_..._state.pth`` holding only those tensors.

The official implementation is run in a subprocess per fixture, because
``RWKV_V7_ON=1`` must be set before ``rwkv.model`` is imported and changes
what ``rwkv.model.RWKV`` is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SPLIT_AT = 7  # logits_split: first SPLIT_AT tokens in one call, the rest in a second call
VERSIONS = ("v4", "v5.0", "v5.1", "v5.2", "v6", "v7")


# The committed default set. Sizes are bounded by "every model < 300 KB" in
# bfloat16; see tests/fixtures/README.md.
def _cfg(**kw):
    return kw


DEFAULT_CONFIGS = [
    # A: L=2, C=64, H=2 x N=32.  B: L=3, C=48, H=3 x N=16 (odd head count, C != 64).
    # F != C everywhere, so a swapped ffn key/value layout cannot go unnoticed.
    _cfg(version="v4", layers=2, emb=64, vocab=101, ffn=96, seed=1),
    _cfg(version="v4", layers=3, emb=48, vocab=79, ffn=96, seed=2),
    _cfg(version="v5.0", layers=2, emb=64, vocab=67, head_size=32, ffn=96, seed=3),
    _cfg(version="v5.0", layers=3, emb=48, vocab=53, head_size=16, ffn=96, seed=4),
    _cfg(version="v5.1", layers=2, emb=64, vocab=67, head_size=32, ffn=96, seed=5),
    _cfg(version="v5.1", layers=3, emb=48, vocab=53, head_size=16, ffn=96, seed=6),
    _cfg(version="v5.2", layers=2, emb=64, vocab=67, head_size=32, ffn=96, seed=7),
    _cfg(version="v5.2", layers=3, emb=48, vocab=53, head_size=16, ffn=96, seed=8),
    _cfg(
        version="v6",
        layers=2,
        emb=64,
        vocab=67,
        head_size=32,
        ffn=96,
        lora_mix=8,
        lora_decay=16,
        seed=9,
    ),
    _cfg(
        version="v6",
        layers=3,
        emb=48,
        vocab=53,
        head_size=16,
        ffn=96,
        lora_mix=4,
        lora_decay=12,
        seed=10,
    ),
    # V7: A: H=2 x N=32; B: H=1 x N=64, 3 layers; C: H=2 x N=64. Head size 64
    # with H=2 needs C=128, whose 4*C*C attention matrices alone are 128 KB
    # per layer in bf16, so C has a single layer to stay under 300 KB.
    _cfg(
        version="v7",
        layers=2,
        emb=64,
        vocab=97,
        head_size=32,
        ffn=96,
        lora_w=8,
        lora_a=12,
        lora_v=4,
        lora_g=16,
        seed=11,
    ),
    _cfg(
        version="v7",
        layers=3,
        emb=64,
        vocab=89,
        head_size=64,
        ffn=96,
        lora_w=16,
        lora_a=8,
        lora_v=12,
        lora_g=20,
        seed=12,
    ),
    _cfg(
        version="v7",
        layers=1,
        emb=128,
        vocab=101,
        head_size=64,
        ffn=64,
        lora_w=16,
        lora_a=24,
        lora_g=32,
        seed=13,
    ),
]


# State-tuned fixtures (names st_*): the same builders plus random
# blocks.{i}.att.time_state (H, N, N), N(0, state_std), stored in bf16. V5/V6 keep
# them inside the model file (the official loader uses them); V7 gets a separate
# state file, since the official RWKV_x070 has no time_state support.
ST_CONFIGS = [
    _cfg(
        version="v6",
        layers=2,
        emb=64,
        vocab=61,
        head_size=32,
        ffn=96,
        lora_mix=8,
        lora_decay=16,
        seed=21,
        state_std=0.5,
        state_in="model",
    ),
    _cfg(
        version="v5.2",
        layers=2,
        emb=64,
        vocab=59,
        head_size=32,
        ffn=96,
        seed=22,
        state_std=0.5,
        state_in="model",
    ),
    _cfg(
        version="v7",
        layers=2,
        emb=64,
        vocab=71,
        head_size=32,
        ffn=96,
        lora_w=8,
        lora_a=12,
        lora_v=4,
        lora_g=16,
        seed=23,
        state_std=0.5,
        state_in="file",
    ),
]
ST_STATE_SEED = 7919  # time_state generator seed = cfg seed + this


# --------------------------------------------------------------------------
# random weight helpers (all fp32 torch tensors, rounded to bf16 at save time)
# --------------------------------------------------------------------------


class Rand:
    def __init__(self, seed: int):
        import torch

        self.t = torch
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, *shape, std=1.0):
        return self.t.randn(*shape, generator=self.g) * std

    def uniform(self, *shape, lo=0.0, hi=1.0):
        return lo + (hi - lo) * self.t.rand(*shape, generator=self.g)

    def linear(self, out_f, in_f, gain=1.0):
        """nn.Linear layout (out, in), N(0, gain/sqrt(in))."""
        return self.normal(out_f, in_f, std=gain / math.sqrt(in_f))

    def lora(self, rows, cols, gain=1.0):
        """Plain (rows, cols) matrix used as x @ M, N(0, gain/sqrt(rows))."""
        return self.normal(rows, cols, std=gain / math.sqrt(rows))

    def ln_w(self, n):
        return self.uniform(n, lo=0.8, hi=1.2)

    def ln_b(self, n):
        return self.uniform(n, lo=-0.1, hi=0.1)

    def mix(self, n):
        """token-shift interpolation coefficient in (0, 1), shape (1, 1, n)."""
        return self.uniform(1, 1, n, lo=0.05, hi=0.95)

    def spread(self, n, lo, hi):
        """Stratified values covering [lo, hi] evenly, in random order."""
        t = self.t
        u = (t.arange(n, dtype=t.float32) + t.rand(n, generator=self.g)) / n
        return (lo + (hi - lo) * u)[t.randperm(n, generator=self.g)]


def _common_head(r: Rand, sd: OrderedDict, V, C):
    sd["emb.weight"] = r.normal(V, C)


def _block_lns(r: Rand, sd, i, C):
    b = f"blocks.{i}."
    sd[b + "ln1.weight"] = r.ln_w(C)
    sd[b + "ln1.bias"] = r.ln_b(C)
    sd[b + "ln2.weight"] = r.ln_w(C)
    sd[b + "ln2.bias"] = r.ln_b(C)
    if i == 0:
        sd[b + "ln0.weight"] = r.ln_w(C)
        sd[b + "ln0.bias"] = r.ln_b(C)


def _tail(r: Rand, sd, V, C):
    sd["ln_out.weight"] = r.ln_w(C)
    sd["ln_out.bias"] = r.ln_b(C)
    sd["head.weight"] = r.linear(V, C, gain=3.0)  # logits std ~ 3


def _ffn_v4_v6(r: Rand, sd, i, C, F, mix_names):
    f = f"blocks.{i}.ffn."
    for n in mix_names:
        sd[f + n] = r.mix(C)
    sd[f + "key.weight"] = r.linear(F, C, gain=1.0)
    sd[f + "receptance.weight"] = r.linear(C, C, gain=1.0)
    sd[f + "value.weight"] = r.linear(C, F, gain=0.5)


def build_v4(cfg, r: Rand):
    L, C, V, F = cfg["layers"], cfg["emb"], cfg["vocab"], cfg["ffn"]
    sd = OrderedDict()
    _common_head(r, sd, V, C)
    for i in range(L):
        a = f"blocks.{i}.att."
        _block_lns(r, sd, i, C)
        # official loader: time_decay -> -exp(time_decay); exp() spans 0.01..5
        sd[a + "time_decay"] = r.spread(C, math.log(0.01), math.log(5.0))
        sd[a + "time_first"] = r.uniform(C, lo=-1.5, hi=1.0)  # log-space bonus
        sd[a + "time_mix_k"] = r.mix(C)
        sd[a + "time_mix_v"] = r.mix(C)
        sd[a + "time_mix_r"] = r.mix(C)
        sd[a + "key.weight"] = r.linear(C, C, gain=1.5)
        sd[a + "value.weight"] = r.linear(C, C)
        sd[a + "receptance.weight"] = r.linear(C, C)
        sd[a + "output.weight"] = r.linear(C, C, gain=0.7)
        _ffn_v4_v6(r, sd, i, C, F, ("time_mix_k", "time_mix_r"))
    _tail(r, sd, V, C)
    return sd


def build_v5(cfg, r: Rand):
    sub = cfg["version"]  # v5.0 / v5.1 / v5.2
    L, C, V, F, N = cfg["layers"], cfg["emb"], cfg["vocab"], cfg["ffn"], cfg["head_size"]
    H = C // N
    gate = sub in ("v5.1", "v5.2")
    u_name = cfg["v5_u"]
    sd = OrderedDict()
    _common_head(r, sd, V, C)
    for i in range(L):
        a = f"blocks.{i}.att."
        _block_lns(r, sd, i, C)
        sd[a + "time_mix_k"] = r.mix(C)
        sd[a + "time_mix_v"] = r.mix(C)
        sd[a + "time_mix_r"] = r.mix(C)
        if gate:
            sd[a + "time_mix_g"] = r.mix(C)
        # decay per step = exp(-exp(time_decay)), time_decay in [-6, 1]
        if sub == "v5.2":
            sd[a + "time_decay"] = r.spread(C, -6.0, 1.0).reshape(H, N)
        else:
            sd[a + "time_decay"] = r.spread(H, -6.0, 1.0)
        ushape = (H, N) if sub == "v5.2" else (H,)
        if u_name == "time_first":  # log-space; loader applies exp()
            sd[a + "time_first"] = r.uniform(*ushape, lo=-1.5, hi=0.7)
        else:  # time_faaaa: used as-is
            sd[a + "time_faaaa"] = r.uniform(*ushape, lo=-0.5, hi=1.5)
        sd[a + "receptance.weight"] = r.linear(C, C)
        sd[a + "key.weight"] = r.linear(C, C)
        sd[a + "value.weight"] = r.linear(C, C)
        sd[a + "output.weight"] = r.linear(C, C, gain=0.5)
        if gate:
            sd[a + "gate.weight"] = r.linear(C, C)
        sd[a + "ln_x.weight"] = r.ln_w(C)
        sd[a + "ln_x.bias"] = r.ln_b(C)
        _ffn_v4_v6(r, sd, i, C, F, ("time_mix_k", "time_mix_r"))
    _tail(r, sd, V, C)
    return sd


def build_v6(cfg, r: Rand):
    L, C, V, F, N = cfg["layers"], cfg["emb"], cfg["vocab"], cfg["ffn"], cfg["head_size"]
    H = C // N
    Dm, Dd = cfg["lora_mix"], cfg["lora_decay"]
    sd = OrderedDict()
    _common_head(r, sd, V, C)
    for i in range(L):
        a = f"blocks.{i}.att."
        _block_lns(r, sd, i, C)
        for n in ("x", "w", "k", "v", "r", "g"):
            sd[a + f"time_maa_{n}"] = r.mix(C)
        sd[a + "time_maa_w1"] = r.lora(C, 5 * Dm, gain=1.0)
        sd[a + "time_maa_w2"] = r.normal(5, Dm, C, std=0.25 / math.sqrt(Dm))
        sd[a + "time_decay"] = r.spread(C, -6.0, 1.0).reshape(1, 1, C)
        sd[a + "time_decay_w1"] = r.lora(C, Dd, gain=1.0)
        sd[a + "time_decay_w2"] = r.lora(Dd, C, gain=0.7)
        sd[a + "time_faaaa"] = r.uniform(H, N, lo=-0.5, hi=1.5)
        sd[a + "receptance.weight"] = r.linear(C, C)
        sd[a + "key.weight"] = r.linear(C, C)
        sd[a + "value.weight"] = r.linear(C, C)
        sd[a + "output.weight"] = r.linear(C, C, gain=0.5)
        sd[a + "gate.weight"] = r.linear(C, C)
        sd[a + "ln_x.weight"] = r.ln_w(C)
        sd[a + "ln_x.bias"] = r.ln_b(C)
        _ffn_v4_v6(r, sd, i, C, F, ("time_maa_k", "time_maa_r"))
    _tail(r, sd, V, C)
    return sd


def build_v7(cfg, r: Rand):
    L, C, V, F, N = cfg["layers"], cfg["emb"], cfg["vocab"], cfg["ffn"], cfg["head_size"]
    H = C // N
    Dw, Da, Dv, Dg = cfg["lora_w"], cfg["lora_a"], cfg["lora_v"], cfg["lora_g"]
    sd = OrderedDict()
    _common_head(r, sd, V, C)
    for i in range(L):
        a = f"blocks.{i}.att."
        f = f"blocks.{i}.ffn."
        _block_lns(r, sd, i, C)
        for n in ("r", "w", "k", "v", "a", "g"):
            sd[a + f"x_{n}"] = r.mix(C)
        # decay = exp(-exp(-0.5) * sigmoid(w0 + lora)); w0 in [-6, 1]
        sd[a + "w1"] = r.lora(C, Dw)
        sd[a + "w2"] = r.lora(Dw, C, gain=0.7)
        sd[a + "w0"] = r.spread(C, -6.0, 1.0).reshape(1, 1, C)
        sd[a + "a1"] = r.lora(C, Da)
        sd[a + "a2"] = r.lora(Da, C, gain=0.7)
        sd[a + "a0"] = r.uniform(1, 1, C, lo=-1.5, hi=1.5)
        if i > 0:  # official checkpoints have no v0/v1/v2 in block 0
            sd[a + "v1"] = r.lora(C, Dv)
            sd[a + "v2"] = r.lora(Dv, C, gain=0.7)
            sd[a + "v0"] = r.uniform(1, 1, C, lo=-1.0, hi=1.5)
        sd[a + "g1"] = r.lora(C, Dg)
        sd[a + "g2"] = r.lora(Dg, C, gain=1.5)
        sd[a + "k_k"] = r.uniform(1, 1, C, lo=0.3, hi=1.5)
        sd[a + "k_a"] = r.uniform(1, 1, C, lo=0.5, hi=1.5)
        sd[a + "r_k"] = r.normal(H, N, std=0.2)
        sd[a + "receptance.weight"] = r.linear(C, C)
        sd[a + "key.weight"] = r.linear(C, C)
        sd[a + "value.weight"] = r.linear(C, C)
        sd[a + "output.weight"] = r.linear(C, C, gain=0.5)
        sd[a + "ln_x.weight"] = r.ln_w(C)
        sd[a + "ln_x.bias"] = r.ln_b(C)
        sd[f + "x_k"] = r.mix(C)
        sd[f + "key.weight"] = r.linear(F, C)
        sd[f + "value.weight"] = r.linear(C, F, gain=0.5)
    _tail(r, sd, V, C)
    return sd


BUILDERS = {
    "v4": build_v4,
    "v5.0": build_v5,
    "v5.1": build_v5,
    "v5.2": build_v5,
    "v6": build_v6,
    "v7": build_v7,
}


# --------------------------------------------------------------------------
# config handling
# --------------------------------------------------------------------------


def complete_config(cfg: dict) -> dict:
    cfg = dict(cfg)
    v = cfg["version"]
    if v not in VERSIONS:
        raise SystemExit(f"unknown version {v!r}; choose from {VERSIONS}")
    C = cfg["emb"]
    cfg.setdefault("seed", 0)
    cfg.setdefault("tokens", 24)
    if cfg.get("ffn") is None:
        cfg["ffn"] = 4 * C
    if v == "v4":
        cfg["head_size"] = None
    else:
        if cfg.get("head_size") is None:
            cfg["head_size"] = 64 if v == "v7" else 32
        if C % cfg["head_size"]:
            raise SystemExit(f"--emb {C} is not a multiple of --head-size {cfg['head_size']}")
    if v.startswith("v5"):
        if cfg["layers"] < 2:
            # rwkv.model detects V5 and its head count from blocks.<i>.att.time_decay
            # only after it has seen an ln_x key, which in official key order comes
            # after layer 0's time_decay: a 1-layer V5 model does not load.
            raise SystemExit("V5 fixtures need --layers >= 2 (official loader quirk)")
        if cfg.get("v5_u") is None:
            cfg["v5_u"] = "time_first" if v == "v5.0" else "time_faaaa"
    if v == "v6":
        cfg["lora_mix"] = cfg.get("lora_mix") or 8
        cfg["lora_decay"] = cfg.get("lora_decay") or 16
    if v == "v7":
        cfg["lora_w"] = cfg.get("lora_w") or 8
        cfg["lora_a"] = cfg.get("lora_a") or 8
        cfg["lora_v"] = cfg.get("lora_v") or 8
        cfg["lora_g"] = cfg.get("lora_g") or 16
    if cfg["tokens"] <= SPLIT_AT + 1:
        raise SystemExit(f"--tokens must be > {SPLIT_AT + 1}")
    if not cfg.get("name"):
        cfg["name"] = f"{v}_L{cfg['layers']}_C{C}_V{cfg['vocab']}"
    return cfg


def lora_dims(cfg):
    if cfg["version"] == "v6":
        return {"mix": cfg["lora_mix"], "decay": cfg["lora_decay"]}
    if cfg["version"] == "v7":
        d = {k: cfg["lora_" + k] for k in ("w", "a", "v", "g")}
        if cfg["layers"] == 1:
            d["v"] = 0  # v0/v1/v2 exist only in blocks 1.., so a 1-layer model has none
        return d
    return {}


def make_tokens(cfg) -> np.ndarray:
    rng = np.random.default_rng(cfg["seed"] + 1000003)
    V, T = cfg["vocab"], cfg["tokens"]
    toks = rng.integers(1, V, size=T)  # first token is never 0
    pos0 = int(rng.integers(2, T - 1))  # token 0 somewhere in the middle
    toks[pos0] = 0
    return toks.astype(np.int64)


# --------------------------------------------------------------------------
# the oracle (runs in a child process)
# --------------------------------------------------------------------------


def oracle_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("mode") == "state_tuned":
        st_oracle_main(spec)
        return
    from importlib.metadata import version as pkg_version

    import rwkv.model as rm  # env prepared by the parent
    import torch

    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    is_v7 = spec["version"] == "v7"

    def load(pth: str):
        if is_v7:  # RWKV_x070 takes the path without '.pth' and has no `verbose`
            return rm.RWKV(pth[:-4], strategy="cpu fp32")
        return rm.RWKV(pth, strategy="cpu fp32", verbose=False)

    def run(model, toks, state=None):
        out, state = model.forward([int(t) for t in toks], state, full_output=True)
        out = out.float()
        if out.dim() == 1:
            out = out.unsqueeze(0)
        return out.numpy().astype(np.float32), state

    toks = spec["tokens"]
    info = {}
    ref = load(spec["fp32_pth"])  # bf16 weights upcast to fp32: pure fp32 maths
    if not is_v7:
        info["detected_version"] = float(ref.version)
    full, _ = run(ref, toks)
    a, st = run(ref, toks[:SPLIT_AT])
    b, _ = run(ref, toks[SPLIT_AT:], st)
    split = np.concatenate([a, b], axis=0)
    pert = list(toks)
    pert[1] = (pert[1] + 1 + pert[2]) % spec["vocab"]
    if pert[1] == toks[1]:
        pert[1] = (pert[1] + 1) % spec["vocab"]
    pfull, _ = run(ref, pert)
    del ref
    direct_model = load(spec["bf16_pth"])  # the committed file, as published models load
    direct, _ = run(direct_model, toks)

    np.savez(
        spec["tmp_npz"],
        logits=full,
        logits_split=split,
        logits_perturbed=pfull,
        logits_direct=direct,
        perturbed_tokens=np.asarray(pert, dtype=np.int64),
    )
    info["rwkv_version"] = pkg_version("rwkv")
    info["torch_version"] = torch.__version__
    Path(spec["info_json"]).write_text(json.dumps(info))


def run_oracle(cfg, bf16_pth: Path, fp32_pth: Path, tokens: np.ndarray, tmp: Path):
    spec = {
        "version": cfg["version"],
        "vocab": cfg["vocab"],
        "tokens": tokens.tolist(),
        "bf16_pth": str(bf16_pth),
        "fp32_pth": str(fp32_pth),
        "tmp_npz": str(tmp / "oracle.npz"),
        "info_json": str(tmp / "info.json"),
    }
    _run_child(cfg, spec, tmp)
    res = dict(np.load(tmp / "oracle.npz"))
    info = json.loads((tmp / "info.json").read_text())
    return res, info


def _run_child(cfg, spec: dict, tmp: Path) -> None:
    """Run ``oracle_main(spec)`` in a child with the official package's env for cfg's version."""
    spec_path = tmp / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env["RWKV_JIT_ON"] = "0"
    env["RWKV_CUDA_ON"] = "0"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.pop("RWKV_DE_VERSION", None)
    if cfg["version"] == "v7":
        env["RWKV_V7_ON"] = "1"
    else:
        env.pop("RWKV_V7_ON", None)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--_oracle", str(spec_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"official rwkv failed on {cfg['name']}")


# --------------------------------------------------------------------------
# fixture generation
# --------------------------------------------------------------------------


def make_fixture(cfg: dict, models_dir: Path, golden_dir: Path) -> dict:
    import torch

    cfg = complete_config(cfg)
    v = cfg["version"]
    sd = BUILDERS[v](cfg, Rand(cfg["seed"]))
    sd_bf16 = OrderedDict((k, t.to(torch.bfloat16).contiguous()) for k, t in sd.items())

    models_dir.mkdir(parents=True, exist_ok=True)
    golden_dir.mkdir(parents=True, exist_ok=True)
    pth = models_dir / f"{cfg['name']}.pth"
    torch.save(sd_bf16, pth)
    tokens = make_tokens(cfg)

    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        fp32_pth = td / "model_fp32.pth"
        torch.save(OrderedDict((k, t.float()) for k, t in sd_bf16.items()), fp32_pth)
        res, info = run_oracle(cfg, pth, fp32_pth, tokens, td)

    logits, split = res["logits"], res["logits_split"]
    pert, direct = res["logits_perturbed"], res["logits_direct"]
    T, V = logits.shape
    assert (T, V) == (cfg["tokens"], cfg["vocab"]), logits.shape
    max_abs = float(np.abs(logits).max())
    stats = {
        "max_abs_logit": max_abs,
        "logit_std": float(logits.std()),
        "split_max_abs_diff": float(np.abs(logits - split).max()),
        "split_rel_diff": float(np.abs(logits - split).max() / max_abs),
        # min over consecutive positions of max|logits[t+1]-logits[t]|
        "min_position_diff": float(np.abs(np.diff(logits, axis=0)).max(axis=1).min()),
        # effect at the LAST position of changing token 1 (only via the recurrent state)
        "state_sensitivity_last": float(np.abs(pert[-1] - logits[-1]).max()),
        "direct_bf16_load_max_abs_diff": float(np.abs(direct - logits).max()),
        "direct_bf16_load_rel_diff": float(np.abs(direct - logits).max() / max_abs),
    }
    for arr in (logits, split, pert, direct):
        if not np.isfinite(arr).all():
            raise SystemExit(f"{cfg['name']}: non-finite logits")
    problems = []
    if stats["split_rel_diff"] > 1e-4:
        problems.append("split logits differ from full-sequence logits")
    if stats["min_position_diff"] < 1e-2:
        problems.append("logits nearly identical at consecutive positions")
    if stats["state_sensitivity_last"] < 1e-2:
        problems.append("state carries no information to the last position")
    if not (0.3 < stats["logit_std"] < 20):
        problems.append(f"logit std {stats['logit_std']:.3g} out of range")
    if problems:
        raise SystemExit(f"{cfg['name']}: " + "; ".join(problems))

    C, N = cfg["emb"], cfg["head_size"]
    sub = {"v4": 4.0, "v5.0": 5.0, "v5.1": 5.1, "v5.2": 5.2, "v6": 6.0, "v7": 7.0}[v]
    if "detected_version" in info and abs(info["detected_version"] - sub) > 1e-6:
        raise SystemExit(
            f"{cfg['name']}: official loader detected v{info['detected_version']}, wanted {sub}"
        )
    meta = {
        "name": cfg["name"],
        "version": v,
        "family": int(sub),
        "sub_version": sub,
        "L": cfg["layers"],
        "C": C,
        "H": (C // N) if N else None,
        "N": N,
        "V": cfg["vocab"],
        "F": cfg["ffn"],
        "lora": lora_dims(cfg),
        "v5_u_tensor": cfg.get("v5_u"),
        "seed": cfg["seed"],
        "T": T,
        "split_at": SPLIT_AT,
        "model_file": f"{cfg['name']}.pth",
        "model_dtype": "bfloat16",
        "n_params": int(sum(t.numel() for t in sd.values())),
        "reference": (
            "official rwkv package, strategy 'cpu fp32', RWKV_JIT_ON=0 RWKV_CUDA_ON=0"
            + (" RWKV_V7_ON=1" if v == "v7" else "")
            + "; weights = the bf16 .pth values upcast exactly to fp32 before loading"
        ),
        "rwkv_version": info["rwkv_version"],
        "torch_version": info["torch_version"],
        **stats,
    }
    npz = golden_dir / f"{cfg['name']}.npz"
    np.savez(
        npz,
        tokens=tokens.astype(np.int64),
        logits=logits.astype(np.float32),
        logits_split=split.astype(np.float32),
        perturbed_tokens=res["perturbed_tokens"].astype(np.int64),
        logits_perturbed=pert.astype(np.float32),
        meta=np.array(json.dumps(meta, sort_keys=True)),
    )
    print(
        f"{cfg['name']:<22} {pth.stat().st_size / 1024:7.1f} KB pth  {npz.stat().st_size / 1024:6.1f} KB npz  "
        f"max|logit| {max_abs:6.2f}  std {stats['logit_std']:5.2f}  split rel {stats['split_rel_diff']:.1e}  "
        f"state {stats['state_sensitivity_last']:.2f}  direct-bf16 rel {stats['direct_bf16_load_rel_diff']:.1e}"
    )
    return meta


# --------------------------------------------------------------------------
# state-tuned fixtures (st_*)
# --------------------------------------------------------------------------


def st_oracle_main(spec: dict) -> None:
    """Child process: official logits with the tuned initial state, and with a zero one.

    V5/V6: ``rwkv.model.RWKV`` on the fp32 copy that holds ``time_state`` (the loader
    starts every call with ``state=None`` from ``time_state.transpose(1, 2)``), and on a
    copy without it for ``logits_plain``. V7: ``RWKV_x070`` with ``state[i*3+1]`` set to
    ``time_state`` as is (its WKV state is [value, key], like time_state), zeros elsewhere.
    """
    from importlib.metadata import version as pkg_version

    import rwkv.model as rm
    import torch

    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    is_v7 = spec["version"] == "v7"
    L = spec["layers"]
    ts = torch.load(spec["state_fp32_pth"], map_location="cpu")  # {name: (H, N, N) fp32}
    info = {}

    def load(pth: str):
        if is_v7:
            return rm.RWKV(pth[:-4], strategy="cpu fp32")
        return rm.RWKV(pth, strategy="cpu fp32", verbose=False)

    def run(model, toks, state):
        out, state = model.forward([int(t) for t in toks], state, full_output=True)
        out = out.float()
        if out.dim() == 1:
            out = out.unsqueeze(0)
        return out.numpy().astype(np.float32), state

    plain_model = load(spec["plain_fp32_pth"])
    if is_v7:
        tuned_model = plain_model

        def tuned_state():
            st = plain_model.generate_zero_state()
            for i in range(L):
                st[i * 3 + 1] = ts[f"blocks.{i}.att.time_state"].float().clone().contiguous()
            return st

    else:
        tuned_model = load(spec["tuned_fp32_pth"])
        info["detected_version"] = float(tuned_model.version)
        info["official_time_state_flag"] = bool(tuned_model.args.time_state)
        if not info["official_time_state_flag"]:
            raise SystemExit("official loader did not see time_state")

        def tuned_state():
            return None  # the loader's own time_state path

    toks = spec["tokens"]
    tuned, _ = run(tuned_model, toks, tuned_state())
    a, st = run(tuned_model, toks[:SPLIT_AT], tuned_state())
    b, _ = run(tuned_model, toks[SPLIT_AT:], st)
    plain, _ = run(plain_model, toks, None)
    if not is_v7:
        # cross-check the documented orientation: the plain model started from an
        # explicit state whose WKV part is time_state.transpose(1, 2) gives the same logits
        st = []
        for i in range(L):
            C = spec["emb"]
            st += [
                torch.zeros(C),
                ts[f"blocks.{i}.att.time_state"].float().transpose(1, 2).contiguous(),
                torch.zeros(C),
            ]
        manual, _ = run(plain_model, toks, st)
        info["manual_transpose_max_abs_diff"] = float(np.abs(manual - tuned).max())
    np.savez(spec["tmp_npz"], logits=tuned, logits_split=np.concatenate([a, b]), logits_plain=plain)
    info["rwkv_version"] = pkg_version("rwkv")
    info["torch_version"] = torch.__version__
    Path(spec["info_json"]).write_text(json.dumps(info))


def st_time_state(cfg) -> OrderedDict:
    """Random ``blocks.{i}.att.time_state`` (H, N, N) fp32 tensors, N(0, state_std)."""
    r = Rand(cfg["seed"] + ST_STATE_SEED)
    H, N = cfg["emb"] // cfg["head_size"], cfg["head_size"]
    return OrderedDict(
        (f"blocks.{i}.att.time_state", r.normal(H, N, N, std=cfg["state_std"]))
        for i in range(cfg["layers"])
    )


def make_st_fixture(cfg: dict, models_dir: Path, golden_dir: Path) -> list[Path]:
    """Write one state-tuned fixture; returns the files written."""
    import torch

    cfg = dict(cfg)
    v = cfg["version"]
    cfg.setdefault("name", f"st_{v}_L{cfg['layers']}_C{cfg['emb']}_V{cfg['vocab']}")
    cfg = complete_config(cfg)
    sd = BUILDERS[v](cfg, Rand(cfg["seed"]))
    ts = OrderedDict((k, t.to(torch.bfloat16).contiguous()) for k, t in st_time_state(cfg).items())
    plain = OrderedDict((k, t.to(torch.bfloat16).contiguous()) for k, t in sd.items())
    if cfg["state_in"] == "model":
        # time_state sits right after time_faaaa, where RWKV-LM's state-tuning
        # modules declare it
        tuned = OrderedDict()
        for k, t in plain.items():
            tuned[k] = t
            if k.endswith(".att.time_faaaa"):
                name = k[: -len("time_faaaa")] + "time_state"
                tuned[name] = ts[name]
        assert all(k in tuned for k in ts)
        model_sd, state_file = tuned, None
    else:
        model_sd, state_file = plain, f"{cfg['name']}_state.pth"

    models_dir.mkdir(parents=True, exist_ok=True)
    golden_dir.mkdir(parents=True, exist_ok=True)
    pth = models_dir / f"{cfg['name']}.pth"
    torch.save(model_sd, pth)
    written = [pth]
    if state_file:
        torch.save(ts, models_dir / state_file)
        written.append(models_dir / state_file)
    tokens = make_tokens(cfg)

    def fp32(d):
        return OrderedDict((k, t.float()) for k, t in d.items())

    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        spec = {
            "mode": "state_tuned",
            "version": v,
            "layers": cfg["layers"],
            "emb": cfg["emb"],
            "tokens": tokens.tolist(),
            "plain_fp32_pth": str(td / "plain_fp32.pth"),
            "tuned_fp32_pth": str(td / "tuned_fp32.pth"),
            "state_fp32_pth": str(td / "state_fp32.pth"),
            "tmp_npz": str(td / "oracle.npz"),
            "info_json": str(td / "info.json"),
        }
        torch.save(fp32(plain), spec["plain_fp32_pth"])
        torch.save(fp32(ts), spec["state_fp32_pth"])
        if cfg["state_in"] == "model":
            torch.save(fp32(model_sd), spec["tuned_fp32_pth"])
        _run_child(cfg, spec, td)
        res = dict(np.load(td / "oracle.npz"))
        info = json.loads((td / "info.json").read_text())

    logits, split, plain_logits = res["logits"], res["logits_split"], res["logits_plain"]
    T, V = logits.shape
    assert (T, V) == (cfg["tokens"], cfg["vocab"]), logits.shape
    for arr in (logits, split, plain_logits):
        if not np.isfinite(arr).all():
            raise SystemExit(f"{cfg['name']}: non-finite logits")
    max_abs = float(np.abs(logits).max())
    effect = np.abs(logits - plain_logits)
    stats = {
        "max_abs_logit": max_abs,
        "logit_std": float(logits.std()),
        "split_max_abs_diff": float(np.abs(logits - split).max()),
        "split_rel_diff": float(np.abs(logits - split).max() / max_abs),
        # how much the tuned state changes the logits (vs. a zero initial state)
        "state_effect_max_abs": float(effect.max()),
        "state_effect_rel": float(effect.max() / max_abs),
        "state_effect_first": float(effect[0].max()),
        "state_effect_last": float(effect[-1].max()),
        "time_state_std": float(torch.cat([t.float().flatten() for t in ts.values()]).std()),
    }
    if "manual_transpose_max_abs_diff" in info:
        stats["official_manual_transpose_max_abs_diff"] = info["manual_transpose_max_abs_diff"]
    problems = []
    if stats["split_rel_diff"] > 1e-4:
        problems.append("split logits differ from full-sequence logits")
    if stats["state_effect_rel"] < 0.05 or stats["state_effect_first"] < 0.1:
        problems.append("the tuned state hardly changes the logits")
    if stats.get("official_manual_transpose_max_abs_diff", 0.0) > 1e-4 * max_abs:
        problems.append("official time_state path != explicit time_state.transpose(1,2) state")
    if not (0.3 < stats["logit_std"] < 20):
        problems.append(f"logit std {stats['logit_std']:.3g} out of range")
    sub = {"v5.2": 5.2, "v6": 6.0, "v7": 7.0}[v]
    if "detected_version" in info and abs(info["detected_version"] - sub) > 1e-6:
        problems.append(f"official loader detected v{info['detected_version']}, wanted {sub}")
    if problems:
        raise SystemExit(f"{cfg['name']}: " + "; ".join(problems))

    C, N = cfg["emb"], cfg["head_size"]
    meta = {
        "name": cfg["name"],
        "version": v,
        "family": int(sub),
        "sub_version": sub,
        "L": cfg["layers"],
        "C": C,
        "H": C // N,
        "N": N,
        "V": cfg["vocab"],
        "F": cfg["ffn"],
        "lora": lora_dims(cfg),
        "v5_u_tensor": cfg.get("v5_u"),
        "seed": cfg["seed"],
        "state_seed": cfg["seed"] + ST_STATE_SEED,
        "state_std": cfg["state_std"],
        "T": T,
        "split_at": SPLIT_AT,
        "model_file": pth.name,
        "state_file": state_file,
        "state_in": cfg["state_in"],
        "time_state_layout": "blocks.{i}.att.time_state (H, N, N) bfloat16, indexed [value, key]",
        "model_dtype": "bfloat16",
        "n_params": int(sum(t.numel() for t in sd.values())),
        "reference": (
            "official rwkv package, strategy 'cpu fp32', RWKV_JIT_ON=0 RWKV_CUDA_ON=0"
            + (
                " RWKV_V7_ON=1; RWKV_x070.forward(tokens, state) with state[i*3+1] = time_state"
                " (no transpose), state[i*3+0] = state[i*3+2] = 0"
                if v == "v7"
                else "; the loader's own time_state path (initial state = time_state.transpose(1,2))"
            )
            + "; weights and time_state = the bf16 values upcast exactly to fp32;"
            " logits_plain: the same weights without time_state (zero initial state)"
        ),
        "rwkv_version": info["rwkv_version"],
        "torch_version": info["torch_version"],
        **stats,
    }
    npz = golden_dir / f"{cfg['name']}.npz"
    np.savez(
        npz,
        tokens=tokens.astype(np.int64),
        logits=logits.astype(np.float32),
        logits_split=split.astype(np.float32),
        logits_plain=plain_logits.astype(np.float32),
        meta=np.array(json.dumps(meta, sort_keys=True)),
    )
    written.append(npz)
    print(
        f"{cfg['name']:<22} {pth.stat().st_size / 1024:7.1f} KB pth  {npz.stat().st_size / 1024:6.1f} KB npz  "
        f"max|logit| {max_abs:6.2f}  split rel {stats['split_rel_diff']:.1e}  "
        f"state effect {stats['state_effect_max_abs']:.2f} (rel {stats['state_effect_rel']:.2f}, "
        f"last {stats['state_effect_last']:.2f})"
    )
    return written


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--version",
        choices=VERSIONS,
        help="build one fixture of this version (default: the committed set)",
    )
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--emb", type=int, default=64, help="C (n_embd)")
    p.add_argument("--vocab", type=int, default=97)
    p.add_argument("--ffn", type=int, default=None, help="F (FFN hidden size), default 4*C")
    p.add_argument(
        "--head-size", type=int, default=None, help="N (V5-V7), default 32 (V5/V6) or 64 (V7)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokens", type=int, default=24, help="sequence length T")
    p.add_argument("--lora-mix", type=int, default=None, help="V6 time_maa LoRA rank (default 8)")
    p.add_argument(
        "--lora-decay", type=int, default=None, help="V6 time_decay LoRA rank (default 16)"
    )
    p.add_argument("--lora-w", type=int, default=None, help="V7 w LoRA rank (default 8)")
    p.add_argument("--lora-a", type=int, default=None, help="V7 a LoRA rank (default 8)")
    p.add_argument("--lora-v", type=int, default=None, help="V7 v LoRA rank (default 8)")
    p.add_argument("--lora-g", type=int, default=None, help="V7 g LoRA rank (default 16)")
    p.add_argument(
        "--v5-u",
        choices=("time_first", "time_faaaa"),
        default=None,
        help="V5 bonus tensor name (default time_first for v5.0, time_faaaa for v5.1/v5.2)",
    )
    p.add_argument(
        "--name", default=None, help="fixture base name (default <version>_L<L>_C<C>_V<V>)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output root; files go to OUT/models and OUT/golden (default tests/fixtures)",
    )
    p.add_argument("--_oracle", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._oracle:
        oracle_main(args._oracle)
        return

    out = args.out or FIXTURES
    models_dir, golden_dir = out / "models", out / "golden"
    if args.version is None:
        configs = DEFAULT_CONFIGS
    else:
        keys = (
            "version",
            "layers",
            "emb",
            "vocab",
            "ffn",
            "head_size",
            "seed",
            "tokens",
            "lora_mix",
            "lora_decay",
            "lora_w",
            "lora_a",
            "lora_v",
            "lora_g",
            "v5_u",
            "name",
        )
        configs = [{k: getattr(args, k) for k in keys}]
    written = []
    for cfg in configs:
        if args.version is None:
            cfg = {**cfg, "tokens": args.tokens}
        meta = make_fixture(cfg, models_dir, golden_dir)
        written += [models_dir / meta["model_file"], golden_dir / f"{meta['name']}.npz"]
    st_written = []
    if args.version is None:
        for cfg in ST_CONFIGS:
            st_written += make_st_fixture({**cfg, "tokens": args.tokens}, models_dir, golden_dir)
        written += st_written
    if args.version is None:
        # the default run owns these two folders: drop fixtures it no longer makes
        for d, ext in ((models_dir, "*.pth"), (golden_dir, "*.npz")):
            for f in d.glob(ext):
                if f not in written:
                    print(f"removing stale {f}")
                    f.unlink()
        big = [f.name for f in written if f.suffix == ".pth" and f.stat().st_size >= 300 * 1024]
        base = [f for f in written if f not in st_written]
        total = sum(f.stat().st_size for f in base)
        st_total = sum(f.stat().st_size for f in st_written)
        print(f"total {total / 1024:.1f} KB in {len(base)} files")
        print(f"state-tuned (st_*) {st_total / 1024:.1f} KB in {len(st_written)} files")
        if big or total >= 3 * 1024 * 1024 or st_total >= 1024 * 1024:
            raise SystemExit(
                f"size budget exceeded: models >= 300 KB: {big}, total {total} bytes, "
                f"st_* total {st_total} bytes"
            )


if __name__ == "__main__":
    main()
