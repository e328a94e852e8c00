#!/usr/bin/env python3
"""Train the small RWKV-7 demo model that ships in ``rwkv_webgpu/demo/``.

Everything runs on the CPU with torch (2 threads) in well under 30 minutes:

1. corpus:    the Python 3.11 documentation from Debian's ``python3.11-doc`` package
              (PSF licence), HTML stripped to plain text; whole pages are held out
              for validation.
2. tokenizer: a byte-level BPE vocabulary trained with ``tokenizers``; id 0 is
              ``<|endoftext|>`` (as in RWKV, id 0 ends a text).
3. model:     RWKV-7 ("x070") with head size 64.  The training forward computes the same
              math as the official ``rwkv`` pip package's ``RWKV_x070`` inference code; the
              recurrence is evaluated chunk by chunk (exact, not an approximation).
4. output:    ``rwkv7-demo.pth`` (official layout, bfloat16 state dict), ``tokenizer.json``
              and ``train_report.json`` (losses, timings, parity, samples).

Usage::

    apt-get install -y python3.11-doc
    python scripts/train_demo_model.py                # about 20 minutes of training
    python scripts/train_demo_model.py --minutes 2    # quick smoke run

The parity check and the samples need the official package (``pip install rwkv``); they are
skipped with a message when it is missing.
"""

from __future__ import annotations

import argparse
import html.parser
import json
import math
import os
import platform
import random
import re
import sys
import time
from pathlib import Path

# The machine is shared: with OpenMP's default busy-waiting, every small op of a 2-thread
# torch stalls for a scheduler time slice whenever another process holds a core (we measured
# 10x slower steps).  Passive waiting avoids that; it must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F
from torch import nn

DOC_ROOT = Path("/usr/share/doc/python3.11/html")
EOT = "<|endoftext|>"
HEAD_SIZE = 64
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "rwkv_webgpu" / "demo"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# 1. corpus: Sphinx HTML -> plain text
# ---------------------------------------------------------------------------------------------

_VOID = {"br", "hr", "img", "meta", "link", "input", "col", "wbr", "source", "area", "base"}
_BLOCK = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "tr", "pre",
          "blockquote", "table", "section", "dl", "ul", "ol", "caption", "figure"}
_PARA = {"p", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "dl", "table", "section"}


class _SphinxText(html.parser.HTMLParser):
    """Collects the text of the ``<div class="body" role="main">`` element of a Sphinx page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.stack: list[tuple[str, bool]] = []
        self.body_depth = 0  # stack depth of the main body div, 0 = outside
        self.pre = 0
        self.skip = 0

    def _emit_break(self, two: bool) -> None:
        self.parts.append("\n\n" if two else "\n")

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            if self.body_depth and tag == "br":
                self._emit_break(False)
            return
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        skip = tag in ("script", "style") or "headerlink" in cls
        self.stack.append((tag, skip))
        self.skip += skip
        if not self.body_depth:
            if tag == "div" and "body" in cls and a.get("role") == "main":
                self.body_depth = len(self.stack)
            return
        if tag == "pre":
            self.pre += 1
        if tag in _BLOCK:
            self._emit_break(tag in _PARA)
        if tag == "li":
            self.parts.append("\x00")  # bullet marker, resolved in page_text()

    def handle_endtag(self, tag):
        if tag in _VOID:
            return
        if not any(t == tag for t, _ in self.stack):
            return  # stray end tag
        while self.stack:
            t, skip = self.stack.pop()
            self.skip -= skip
            if self.body_depth:
                if t == "pre":
                    self.pre -= 1
                if t in _BLOCK:
                    self._emit_break(t in _PARA)
                if len(self.stack) < self.body_depth:
                    self.body_depth = 0
            if t == tag:
                break

    def handle_data(self, data):
        if not self.body_depth or self.skip:
            return
        if self.pre:
            self.parts.append(data)
            return
        data = re.sub(r"\s+", " ", data)
        if not self.parts or self.parts[-1].endswith(("\n", "\x00")):
            data = data.lstrip()
        if data:
            self.parts.append(data)


def page_text(path: Path) -> str:
    p = _SphinxText()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    p.close()
    text = "".join(p.parts)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\x00\s*", "* ", text)  # "<li><p>item" -> "* item"
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def corpus_pages(root: Path = DOC_ROOT) -> list[tuple[str, str]]:
    """(relative path, text) of every documentation page, sorted by path."""
    if not root.is_dir():
        sys.exit(f"{root} not found: install Debian's python3.11-doc (apt-get install -y python3.11-doc)")
    skip = ("genindex", "py-modindex", "search", "_", "whatsnew/changelog")
    paths = sorted(p for p in root.rglob("*.html") if not str(p.relative_to(root)).startswith(skip))
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as ex:
        texts = list(ex.map(page_text, paths, chunksize=8))
    return [(str(p.relative_to(root)), t) for p, t in zip(paths, texts) if len(t) > 200]


def is_validation_page(rel: str) -> bool:
    """Deterministic ~5% page-level hold-out (by a stable hash of the path)."""
    h = 0
    for ch in rel.encode():
        h = (h * 131 + ch) % 1_000_003
    return h % 20 == 7


# ---------------------------------------------------------------------------------------------
# 2. tokenizer
# ---------------------------------------------------------------------------------------------

def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],  # first special token -> id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.token_to_id(EOT) == 0
    return tok


# ---------------------------------------------------------------------------------------------
# 3. model (parameter names and shapes == official RWKV-7 .pth layout)
# ---------------------------------------------------------------------------------------------

def lora_dims(C: int) -> dict[str, int]:
    r = lambda f: max(32, round(f / 32) * 32)
    return {"w": r(1.8 * C ** 0.5), "a": r(1.8 * C ** 0.5), "v": r(1.3 * C ** 0.5), "g": r(0.6 * C ** 0.8)}


def wkv7_sequential(r, lw, k, v, a, b, state=None):
    """Reference recurrence, one token at a time, exactly as the official inference code.

    Inputs are (B, T, H, N); lw is log(decay).  State S is (B, H, N_v, N_k):
    S_t = S_{t-1} diag(w_t) + (S_{t-1} a_t) b_t^T + v_t k_t^T,  y_t = S_t r_t.
    """
    B, T, H, N = r.shape
    S = torch.zeros(B, H, N, N, dtype=r.dtype) if state is None else state
    w = torch.exp(lw)
    ys = []
    for t in range(T):
        sa = S @ a[:, t].unsqueeze(-1)  # (B,H,N,1)
        S = S * w[:, t].unsqueeze(-2) + sa @ b[:, t].unsqueeze(-2) + v[:, t].unsqueeze(-1) @ k[:, t].unsqueeze(-2)
        ys.append((S @ r[:, t].unsqueeze(-1)).squeeze(-1))
    return torch.stack(ys, 1), S


def wkv7_chunked(r, lw, k, v, a, b, chunk: int = 16):
    """The same recurrence evaluated exactly, ``chunk`` tokens at a time (zero initial state).

    Per chunk, with g_t = prod_{s<=t} w_s (within the chunk) and X = S^T (N_k x N_v):
      u_t^T = a_t^T X_{t-1}   solves  (I - M_ab) U = (a*g_{t-1}) X_0 + M_ak V
      y_t^T = (r_t*g_t)^T X_0 + sum_{s<=t} M_rb[t,s] u_s^T + M_rk[t,s] v_s^T
      X_L   = diag(g_L) X_0 + sum_s (b_s g_L/g_s) u_s^T + (k_s g_L/g_s) v_s^T
    with M_xy[t,s] = sum_n x_t[n] y_s[n] g_{t or t-1}[n]/g_s[n] (strictly / non-strictly lower).
    """
    B, T, H, N = r.shape
    L = chunk
    pad = (-T) % L
    if pad:  # padding at the end does not change earlier outputs
        r, lw, k, v, a, b = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (r, lw, k, v, a, b))
    nc = (T + pad) // L

    def split(x):  # (B, T, H, N) -> (B, H, nc, L, N)
        return x.view(B, nc, L, H, N).permute(0, 3, 1, 2, 4)

    r, lw, k, v, a, b = map(split, (r, lw, k, v, a, b))
    lc = lw.cumsum(-2)  # log g_t (inclusive)
    lc_prev = lc - lw  # log g_{t-1}
    inv = torch.exp(-lc)  # 1/g_s, at most exp(0.61*L)
    a_g = a * torch.exp(lc_prev)
    r_g = r * torch.exp(lc)
    b_i = b * inv
    k_i = k * inv
    strict = torch.ones(L, L, dtype=torch.bool).tril(-1)
    incl = torch.ones(L, L, dtype=torch.bool).tril(0)
    zero = torch.zeros((), dtype=r.dtype)
    M_ab = torch.where(strict, a_g @ b_i.transpose(-1, -2), zero)
    M_ak = torch.where(strict, a_g @ k_i.transpose(-1, -2), zero)
    M_rb = torch.where(incl, r_g @ b_i.transpose(-1, -2), zero)
    M_rk = torch.where(incl, r_g @ k_i.transpose(-1, -2), zero)
    eye = torch.eye(L, dtype=r.dtype)
    Tinv = torch.linalg.solve_triangular(eye - M_ab, eye.expand_as(M_ab), upper=False, unitriangular=True)
    W1 = Tinv @ a_g  # u = W1 X0 + U0
    U0 = Tinv @ (M_ak @ v)
    Y0 = M_rb @ U0 + M_rk @ v  # output part independent of X0
    RW = r_g + M_rb @ W1  # y = RW X0 + Y0
    dL = torch.exp(lc[..., -1:, :] - lc)  # g_L/g_s <= 1
    bL = (b * dL).transpose(-1, -2)  # (B,H,nc,N,L)
    kL = (k * dL).transpose(-1, -2)
    gL = torch.exp(lc[..., -1, :]).unsqueeze(-1)  # (B,H,nc,N,1)

    X = torch.zeros(B, H, N, N, dtype=r.dtype)
    ys = []
    for c in range(nc):
        ys.append(RW[:, :, c] @ X + Y0[:, :, c])
        if c + 1 < nc:
            U = W1[:, :, c] @ X + U0[:, :, c]
            X = gL[:, :, c] * X + bL[:, :, c] @ U + kL[:, :, c] @ v[:, :, c]
    y = torch.stack(ys, 2)  # (B,H,nc,L,N)
    y = y.permute(0, 2, 3, 1, 4).reshape(B, nc * L, H, N)
    return y[:, :T]


class TimeMix(nn.Module):
    def __init__(self, C: int, layer_id: int, n_layer: int):
        super().__init__()
        H, N = C // HEAD_SIZE, HEAD_SIZE
        self.layer_id, self.H, self.N = layer_id, H, N
        d = lora_dims(C)
        p = lambda *shape: nn.Parameter(torch.zeros(*shape))
        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (p(1, 1, C) for _ in range(6))
        self.w0, self.w1, self.w2 = p(1, 1, C), p(C, d["w"]), p(d["w"], C)
        self.a0, self.a1, self.a2 = p(1, 1, C), p(C, d["a"]), p(d["a"], C)
        self.v0, self.v1, self.v2 = p(1, 1, C), p(C, d["v"]), p(d["v"], C)
        self.g1, self.g2 = p(C, d["g"]), p(d["g"], C)
        self.k_k, self.k_a, self.r_k = p(1, 1, C), p(1, 1, C), p(H, N)
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=64e-5)
        self._init(C, layer_id, n_layer)

    @torch.no_grad()
    def _init(self, C, layer_id, n_layer):
        N = self.N
        depth = layer_id / max(1, n_layer - 1)  # 0 (first) .. 1 (last)
        shallow = 1.0 - layer_id / n_layer  # 1 (first) .. ~0 (last)
        pos = torch.arange(C, dtype=torch.float32) / C
        # token-shift mixes: a spread over channels, stronger shift in early layers
        for name, e in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
            getattr(self, name).copy_((1.0 - pos.pow(e * shallow)).view(1, 1, C))
        n = torch.arange(C, dtype=torch.float32)
        lin = n / (C - 1) - 0.5
        zz = ((n % N) - (N - 1) / 2) / ((N - 1) / 2)
        zz = zz * zz.abs()
        # decay bias: sigmoid(w0) from ~0 (w ~ 1, long memory) to ~1 (w ~ 0.55), zigzag within heads
        self.w0.copy_((-6 + 6 * (n / (C - 1)) ** (1 + depth ** 0.3) + 0.5 + 2.5 * zz).view(1, 1, C))
        self.a0.copy_((-0.19 + 0.3 * zz + 0.4 * lin).view(1, 1, C))
        self.v0.copy_((0.73 - 0.4 * lin).view(1, 1, C))
        self.k_k.copy_((0.71 - 0.1 * lin).view(1, 1, C))
        self.k_a.fill_(1.02)
        self.r_k.fill_(-0.04)
        # LoRA: zero down-projection, small orthogonal up-projection
        for m in (self.w2, self.a2, self.v2, self.g2):
            nn.init.orthogonal_(m, gain=0.1)
        s = C ** -0.5
        nn.init.uniform_(self.receptance.weight, -0.5 * s, 0.5 * s)
        nn.init.uniform_(self.key.weight, -0.05 * s, 0.05 * s)
        nn.init.uniform_(self.value.weight, -0.5 * s, 0.5 * s)
        nn.init.zeros_(self.output.weight)  # each block starts as identity
        self.ln_x.weight.fill_(((1 + layer_id) / n_layer) ** 0.7)
        self.ln_x.bias.zero_()

    def forward(self, x, v_first, chunk: int):
        B, T, C = x.shape
        H, N = self.H, self.N
        xx = F.pad(x, (0, 0, 1, -1)) - x  # previous token (zero before the first) minus current
        xr, xw, xk = x + xx * self.x_r, x + xx * self.x_w, x + xx * self.x_k
        xv, xa, xg = x + xx * self.x_v, x + xx * self.x_a, x + xx * self.x_g
        r = self.receptance(xr)
        w = torch.tanh(xw @ self.w1) @ self.w2
        k = self.key(xk)
        v = self.value(xv)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, p=2.0).view(B, T, C)
        k = k * (1 + (a - 1) * self.k_a)
        if self.layer_id == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        lw = -0.606531 * torch.sigmoid(self.w0 + w)  # log of exp(-0.606531*sigmoid(.)) (official)
        hv = lambda t: t.view(B, T, H, N)
        if chunk > 0:
            y = wkv7_chunked(hv(r), hv(lw), hv(k), hv(v), hv(-kk), hv(kk * a), chunk)
        else:
            y = wkv7_sequential(hv(r), hv(lw), hv(k), hv(v), hv(-kk), hv(kk * a))[0]
        y = F.group_norm(y.reshape(B * T, C), H, self.ln_x.weight, self.ln_x.bias, eps=64e-5).view(B, T, C)
        y = y + ((r * k).view(B, T, H, N) * self.r_k).sum(-1, keepdim=True).mul(hv(v)).view(B, T, C)
        return self.output(y * g), v_first


class ChannelMix(nn.Module):
    def __init__(self, C: int, layer_id: int, n_layer: int):
        super().__init__()
        self.x_k = nn.Parameter(torch.zeros(1, 1, C))
        self.key = nn.Linear(C, 4 * C, bias=False)
        self.value = nn.Linear(4 * C, C, bias=False)
        with torch.no_grad():
            shallow = 1.0 - layer_id / n_layer
            pos = torch.arange(C, dtype=torch.float32) / C
            self.x_k.copy_((1.0 - pos.pow(shallow ** 4)).view(1, 1, C))
            s = C ** -0.5
            nn.init.uniform_(self.key.weight, -0.5 * s, 0.5 * s)
            nn.init.zeros_(self.value.weight)

    def forward(self, x):
        xx = F.pad(x, (0, 0, 1, -1)) - x
        k = torch.relu(self.key(x + xx * self.x_k)) ** 2
        return self.value(k)


class Block(nn.Module):
    def __init__(self, C: int, layer_id: int, n_layer: int):
        super().__init__()
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(C)
        self.ln1 = nn.LayerNorm(C)
        self.ln2 = nn.LayerNorm(C)
        self.att = TimeMix(C, layer_id, n_layer)
        self.ffn = ChannelMix(C, layer_id, n_layer)


class RWKV7(nn.Module):
    def __init__(self, vocab: int, C: int, n_layer: int):
        super().__init__()
        assert C % HEAD_SIZE == 0
        self.emb = nn.Embedding(vocab, C)
        self.blocks = nn.ModuleList(Block(C, i, n_layer) for i in range(n_layer))
        self.ln_out = nn.LayerNorm(C)
        self.head = nn.Linear(C, vocab, bias=False)
        with torch.no_grad():
            nn.init.uniform_(self.emb.weight, -1e-4, 1e-4)  # ln0 normalises it anyway
            nn.init.orthogonal_(self.head.weight, gain=0.5 * (vocab / C) ** 0.5)

    def forward(self, idx, chunk: int = 16):
        x = self.blocks[0].ln0(self.emb(idx))
        v_first = None
        for blk in self.blocks:
            dx, v_first = blk.att(blk.ln1(x), v_first, chunk)
            x = x + dx
            x = x + blk.ffn(blk.ln2(x))
        return self.head(self.ln_out(x))


# ---------------------------------------------------------------------------------------------
# 4. training / evaluation helpers
# ---------------------------------------------------------------------------------------------

def encode_pages(tok, pages: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for enc in tok.encode_batch(pages):
        ids.extend(enc.ids)
        ids.append(0)  # <|endoftext|> between pages
    return torch.tensor(ids, dtype=torch.long)


def unigram_baseline(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab: int) -> float:
    """Cross-entropy (nats/token) of the validation tokens under add-one-smoothed training unigram frequencies."""
    counts = torch.bincount(train_ids, minlength=vocab).double() + 1.0
    logp = torch.log(counts / counts.sum())
    return float(-logp[val_ids].mean())


@torch.no_grad()
def evaluate(model, ids: torch.Tensor, ctx: int, batch: int, chunk: int = 16, max_windows: int | None = None) -> float:
    """Mean next-token loss (nats) over non-overlapping windows of ``ctx`` tokens (each from a zero state).

    All consecutive windows, or ``max_windows`` windows spread evenly over ``ids``.
    """
    model.eval()
    n = (len(ids) - 1) // ctx
    starts = torch.arange(n) * ctx
    if max_windows and max_windows < n:
        starts = starts[torch.linspace(0, n - 1, max_windows).long()]
        n = max_windows
    xs = torch.stack([ids[s:s + ctx] for s in starts.tolist()])
    ys = torch.stack([ids[s + 1:s + ctx + 1] for s in starts.tolist()])
    tot, cnt = 0.0, 0
    for i in range(0, n, batch):
        logits = model(xs[i:i + batch], chunk)
        tot += float(F.cross_entropy(logits.flatten(0, 1), ys[i:i + batch].flatten(), reduction="sum"))
        cnt += ys[i:i + batch].numel()
    model.train()
    return tot / cnt


def official_state_dict(model: RWKV7) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    order = ["emb.weight"] + [k for k in sd if k.startswith("blocks.")] + ["ln_out.weight", "ln_out.bias", "head.weight"]
    return {k: sd[k] for k in order}


def official_model(pth: Path):
    """The official ``rwkv`` package's RWKV_x070 on the CPU in fp32, or None if not installed."""
    os.environ["RWKV_V7_ON"] = "1"
    os.environ["RWKV_JIT_ON"] = "0"
    os.environ["RWKV_CUDA_ON"] = "0"
    try:
        from rwkv.model import RWKV
    except ImportError:
        log("official `rwkv` package not installed: skipping parity check and samples")
        return None
    return RWKV(str(pth.with_suffix("")), strategy="cpu fp32")


def sample_official(rwkv, tok, prompt: str, n_tokens: int, temperature: float, top_p: float, seed: int) -> str:
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = tok.encode(prompt).ids
    logits, state = rwkv.forward(ids, None)
    out: list[int] = []
    for _ in range(n_tokens):
        p = torch.softmax(logits.float() / temperature, -1).double().numpy()
        order = np.argsort(-p)
        cum = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cum, top_p)) + 1]  # nucleus
        q = p[keep] / p[keep].sum()
        nxt = int(keep[rng.choice(len(keep), p=q)])
        if nxt == 0:
            break
        out.append(nxt)
        logits, state = rwkv.forward([nxt], state)
    return prompt + tok.decode(out)


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--n-embd", type=int, default=192)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--lr-final", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget for the optimisation loop")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--eval-only", action="store_true",
                    help="re-evaluate the model already in --out (losses, parity, samples) without training")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/rwkv7-demo-corpus.json"),
                    help="cache of the extracted corpus text")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormals can slow CPU kernels a lot
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    t_start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    report_path = args.out / "train_report.json"
    if args.eval_only:  # keep the training record, refresh the rest
        report = json.loads(report_path.read_text())

    # -- corpus
    if args.cache.is_file():
        pages = json.loads(args.cache.read_text())
        log(f"corpus: {len(pages)} pages from cache {args.cache}")
    else:
        pages = corpus_pages()
        args.cache.write_text(json.dumps(pages))
        log(f"corpus: extracted {len(pages)} pages from {DOC_ROOT}")
    train_pages = [t for rel, t in pages if not is_validation_page(rel)]
    val_pages = [t for rel, t in pages if is_validation_page(rel)]
    report["corpus"] = {
        "source": str(DOC_ROOT), "pages": len(pages), "train_pages": len(train_pages), "val_pages": len(val_pages),
        "train_chars": sum(map(len, train_pages)), "val_chars": sum(map(len, val_pages)),
        "val_page_names": [rel for rel, _ in pages if is_validation_page(rel)],
    }
    try:
        import subprocess
        report["corpus"]["package"] = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package} ${Version}", "python3.11-doc"],
            capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        pass

    # -- tokenizer (trained on the training pages only)
    t0 = time.time()
    tok_path = args.out / "tokenizer.json"
    if args.eval_only:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(str(tok_path))
    else:
        tok = train_tokenizer(train_pages, args.vocab)
        tok.save(str(tok_path))
    V = tok.get_vocab_size()
    train_ids = encode_pages(tok, train_pages)
    val_ids = encode_pages(tok, val_pages)
    log(f"tokenizer: {V} tokens in {time.time() - t0:.1f}s; train {len(train_ids):,} tokens, val {len(val_ids):,} tokens")
    report["tokenizer"] = {"vocab_size": V, "train_tokens": len(train_ids), "val_tokens": len(val_ids),
                           "train_chars_per_token": report["corpus"]["train_chars"] / len(train_ids)}
    uni = unigram_baseline(train_ids, val_ids, V)
    log(f"unigram baseline on validation: {uni:.4f} nats/token")

    # -- model
    pth = args.out / "rwkv7-demo.pth"
    if args.eval_only:
        sd = torch.load(pth, map_location="cpu")
        args.n_embd = sd["emb.weight"].shape[1]
        args.n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        T = args.ctx = int(report["loss"]["ctx"])
    model = RWKV7(V, args.n_embd, args.n_layer)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: L={args.n_layer} C={args.n_embd} H={args.n_embd // HEAD_SIZE} V={V} params={n_params:,} "
        f"lora={lora_dims(args.n_embd)}")
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        big = p.dim() == 2 and ("weight" in name and "ln" not in name) and name != "emb.weight"
        (decay if big else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.99), eps=1e-8)

    # -- train: random windows, wall-clock-driven cosine schedule
    budget = args.minutes * 60.0
    T, Bsz = args.ctx, args.batch
    n_windows = len(train_ids) - T - 1
    t_train = time.time()
    step, seen, ema = 0, 0, None
    history = []
    while not args.eval_only:
        frac = (time.time() - t_train) / budget
        if frac >= 1.0:
            break
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        lr = args.lr_final + (lr - args.lr_final) * 0.5 * (1 + math.cos(math.pi * frac)) if step >= args.warmup else lr
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, n_windows, (Bsz,))
        x = torch.stack([train_ids[s:s + T] for s in starts.tolist()])
        y = torch.stack([train_ids[s + 1:s + T + 1] for s in starts.tolist()])
        logits = model(x, args.chunk)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += x.numel()
        li = loss.item()
        ema = li if ema is None else 0.98 * ema + 0.02 * li
        if step % 25 == 0:
            el = time.time() - t_train
            log(f"step {step} loss {ema:.4f} lr {lr:.2e} tokens {seen:,} ({seen / el:.0f} tok/s) {el / 60:.1f} min")
            history.append({"step": step, "minutes": round(el / 60, 2), "train_loss_ema": round(ema, 4), "tokens": seen})
    train_seconds = time.time() - t_train
    if not args.eval_only:
        log(f"training done: {step} steps, {seen:,} tokens ({seen / len(train_ids):.2f} epochs) in {train_seconds / 60:.1f} min")

    # -- save in the official layout, then evaluate the bf16-rounded weights
    if not args.eval_only:
        sd = official_state_dict(model)
        torch.save(sd, pth)
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    t0 = time.time()
    val_loss = evaluate(model, val_ids, T, 32, args.chunk)
    train_loss = evaluate(model, train_ids, T, 32, args.chunk, max_windows=len(val_ids) // T)
    log(f"eval (bf16 weights, ctx {T}): val {val_loss:.4f} train {train_loss:.4f} unigram {uni:.4f} nats/token "
        f"({time.time() - t0:.0f}s)")
    report["model"] = {"n_layer": args.n_layer, "n_embd": args.n_embd, "n_head": args.n_embd // HEAD_SIZE,
                       "head_size": HEAD_SIZE, "vocab_size": V, "lora": lora_dims(args.n_embd), "params": n_params,
                       "pth_bytes": pth.stat().st_size, "tokenizer_bytes": tok_path.stat().st_size}
    if not args.eval_only:
        report["training"] = {"steps": step, "tokens": seen, "epochs": seen / len(train_ids), "seconds": round(train_seconds, 1),
                              "threads": args.threads, "cpu": platform.processor() or platform.machine(),
                              "torch": torch.__version__, "history": history}
    report["loss"] = {"val": val_loss, "train": train_loss, "unigram_val": uni, "ctx": T, "units": "nats/token",
                      "val_bits_per_char": val_loss * len(val_ids) / report["corpus"]["val_chars"] / math.log(2)}

    # -- parity with the official package (fp32 on the bf16-rounded weights)
    rwkv = official_model(pth)
    if rwkv is not None:
        with torch.no_grad():
            ids = val_ids[:200].tolist()
            ref, _ = rwkv.forward(ids, None, full_output=True)
            ours_chunk = model(torch.tensor([ids]), args.chunk)[0]
            ours_seq = model(torch.tensor([ids]), 0)[0]
        rel = lambda a, b: float((a - b).abs().max() / b.abs().max())
        report["parity"] = {"tokens": len(ids), "max_abs_logit": float(ref.abs().max()),
                            "rel_err_chunked": rel(ours_chunk, ref), "rel_err_sequential": rel(ours_seq, ref),
                            "max_abs_err_chunked": float((ours_chunk - ref).abs().max())}
        log(f"parity vs official rwkv (fp32, {len(ids)} tokens): {report['parity']}")
        samples = []
        for i, prompt in enumerate(["The Python interpreter", "def ", "To install a package", "A list comprehension"]):
            s = sample_official(rwkv, tok, prompt, 80, 0.8, 0.9, seed=42 + i)
            samples.append({"prompt": prompt, "temperature": 0.8, "top_p": 0.9, "seed": 42 + i, "text": s})
            log(f"sample {i}: {s!r}")
        report["samples"] = samples

    if not args.eval_only:
        report["total_seconds"] = round(time.time() - t_start, 1)
    report_path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    log(f"wrote {pth} ({pth.stat().st_size:,} B), {tok_path} ({tok_path.stat().st_size:,} B); "
        f"total {(time.time() - t_start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
