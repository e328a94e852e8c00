"""Samplers: pure functions of a logits vector ``(V,)``, and a small stateful :class:`Sampler`.

:func:`sample` applies them in this order (each step is its own function, so each is tested alone):

1. logit bias, banned tokens and a mask of allowed ids (e.g. ids the tokenizer can decode);
2. repetition, presence and frequency penalties from decayed occurrence counts (ChatRWKV style:
   ``logit -= presence + frequency * count``; every step the counts are multiplied by
   ``penalty_decay`` and the chosen token's count grows by 1);
3. temperature 0: argmax (greedy); else ``softmax(logits / temperature)``;
4. the top-k, top-p (nucleus), typical and min-p filters, each renormalising what it keeps;
5. one uniform draw from the seeded ``numpy.random.Generator``, mapped through the CDF.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import RWKVError

LogitBias = Mapping[int, float] | tuple[tuple[int, float], ...]


def _bad(name: str, rule: str, value: object) -> ValueError:
    return ValueError(f"SamplingConfig.{name} must be {rule}, got {value!r}")


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen. ``temperature == 0`` means greedy (argmax).

    ``logit_bias`` (``{id: bias}``) is added to the logits; ``banned`` ids are never chosen.
    The penalties only act through a :class:`Sampler`, which keeps the occurrence counts.
    The config is immutable and hashable; ``dataclasses.replace`` makes a changed copy.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    typical_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    penalty_decay: float = 0.996
    logit_bias: LogitBias = ()
    banned: Collection[int] = frozenset()
    seed: int | None = None

    def __post_init__(self) -> None:
        def real(
            name: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False
        ) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                raise _bad(name, "a number", v)
            if (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi):
                rule = f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
                raise _bad(name, rule, v)

        inf = math.inf
        real("temperature", 0, inf, hi_open=True)
        real("top_p", 0, 1, lo_open=True)
        real("min_p", 0, 1, hi_open=True)
        real("typical_p", 0, 1, lo_open=True)
        real("presence_penalty", -inf, inf, True, True)
        real("frequency_penalty", -inf, inf, True, True)
        real("repetition_penalty", 0, inf, True, True)
        real("penalty_decay", 0, 1, lo_open=True)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise _bad("top_k", "an integer >= 0 (0 keeps all)", self.top_k)
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0
        ):
            raise _bad("seed", "None or an integer >= 0", self.seed)
        object.__setattr__(self, "logit_bias", _normalise_bias(self.logit_bias))
        object.__setattr__(self, "banned", _normalise_ids("banned", self.banned))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def has_penalties(self) -> bool:
        return (
            self.presence_penalty != 0
            or self.frequency_penalty != 0
            or self.repetition_penalty != 1
        )

    def replace(self, **changes: Any) -> SamplingConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _normalise_ids(name: str, ids: Collection[int]) -> frozenset[int]:
    try:
        out = frozenset(int(i) for i in ids)
    except (TypeError, ValueError):
        raise _bad(name, "a collection of token ids", ids) from None
    if any(i < 0 for i in out):
        raise _bad(name, "token ids >= 0", sorted(out))
    return out


def _normalise_bias(bias: LogitBias) -> tuple[tuple[int, float], ...]:
    try:
        items = sorted((int(k), float(v)) for k, v in dict(bias).items())
    except (TypeError, ValueError):
        raise _bad("logit_bias", "a mapping {token id: bias}", bias) from None
    for k, v in items:
        if k < 0 or math.isnan(v) or v == math.inf:
            raise _bad("logit_bias", "{id >= 0: finite bias or -inf}", {k: v})
    return tuple(items)


# -- step 1 and 2: logits -> logits ----------------------------------------------------------
def apply_bias(
    logits: np.ndarray,
    bias: LogitBias = (),
    banned: Collection[int] = (),
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """``logits + bias``, with ``banned`` ids and ids outside the boolean ``allowed`` mask at -inf.

    Ids beyond the logits' length (e.g. a bias for a bigger vocabulary) are ignored.
    """
    out = np.array(logits, dtype=np.float64)
    v = out.size
    for k, b in dict(bias).items():
        if 0 <= k < v:
            out[k] += b
    ban = [i for i in banned if 0 <= i < v]
    if ban:
        out[ban] = -np.inf
    if allowed is not None:
        out[: len(allowed)][~allowed[:v]] = -np.inf
    return out


def apply_penalties(
    logits: np.ndarray,
    counts: np.ndarray,
    presence: float = 0.0,
    frequency: float = 0.0,
    repetition: float = 1.0,
) -> np.ndarray:
    """Penalise tokens with a positive occurrence count (``counts`` is ``(V,)``, decayed).

    ``logit -= presence + frequency * count`` (ChatRWKV's alpha_presence / alpha_frequency), then
    the CTRL repetition penalty: a positive logit is divided by ``repetition``, a negative one
    multiplied by it.
    """
    out = np.array(logits, dtype=np.float64)
    seen = counts > 0
    if not seen.any():
        return out
    out[seen] -= presence + frequency * counts[seen]
    if repetition != 1.0:
        out[seen] = np.where(out[seen] > 0, out[seen] / repetition, out[seen] * repetition)
    return out


# -- step 3: logits -> probabilities ---------------------------------------------------------
def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` in float64; -inf logits get probability 0."""
    z = np.asarray(logits, dtype=np.float64) / max(temperature, 1e-8)
    top = z.max()
    if not np.isfinite(top):
        raise RWKVError("no token can be sampled: every logit is -inf or NaN (all banned?)")
    p: np.ndarray = np.exp(z - top)
    p /= p.sum()
    return p


# -- step 4: probabilities -> probabilities ------------------------------------------------
def _keep(probs: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = np.zeros_like(probs)
    out[idx] = probs[idx]
    out /= out.sum()
    return out


def _smallest_set(probs: np.ndarray, order: np.ndarray, mass: float) -> np.ndarray:
    """The first ids of ``order`` whose probabilities add up to at least ``mass``."""
    cum = np.cumsum(probs[order])
    cut = int(np.searchsorted(cum, mass * cum[-1])) + 1
    return order[:cut]


def filter_top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """Keep the k most likely tokens (k <= 0 keeps all)."""
    if k <= 0 or k >= probs.size:
        return probs
    return _keep(probs, np.argpartition(-probs, k - 1)[:k])


def filter_top_p(probs: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose mass reaches p (nucleus sampling)."""
    if p >= 1.0:
        return probs
    # Sorting 65536 probabilities costs ~10 ms; the nucleus is usually a few hundred tokens, so
    # sort only the k most likely, growing k until they hold the mass (ties with the rest excluded).
    total = probs.sum()
    k = 256
    while k < probs.size // 4:
        top = np.argpartition(-probs, k)[:k]
        top = top[np.lexsort((top, -probs[top]))]  # by probability, then id: a stable order
        cum = np.cumsum(probs[top])
        cut = int(np.searchsorted(cum, p * total))
        if cut < k - 1 and probs[top[cut]] > probs[top[-1]]:
            return _keep(probs, top[: cut + 1])
        k *= 8
    return _keep(probs, _smallest_set(probs, np.argsort(-probs, kind="stable"), p))


def filter_typical(probs: np.ndarray, mass: float) -> np.ndarray:
    """Locally typical sampling: keep the tokens whose surprise ``-log p`` is closest to the
    entropy, fewest first, until their mass reaches ``mass``."""
    if mass >= 1.0:
        return probs
    nz = probs > 0
    logp = np.full_like(probs, -np.inf)
    logp[nz] = np.log(probs[nz])
    entropy = -np.sum(probs[nz] * logp[nz])
    distance = np.where(nz, np.abs(-logp - entropy), np.inf)
    return _keep(probs, _smallest_set(probs, np.argsort(distance, kind="stable"), mass))


def filter_min_p(probs: np.ndarray, min_p: float) -> np.ndarray:
    """Keep tokens at least ``min_p`` times as likely as the most likely one."""
    if min_p <= 0:
        return probs
    return _keep(probs, np.flatnonzero(probs >= min_p * probs.max()))


def probabilities(
    logits: np.ndarray,
    config: SamplingConfig,
    counts: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """The distribution :func:`sample` draws from (one-hot at the argmax when greedy)."""
    z = apply_bias(logits, config.logit_bias, config.banned, allowed)
    if counts is not None and config.has_penalties:
        z = apply_penalties(
            z, counts, config.presence_penalty, config.frequency_penalty, config.repetition_penalty
        )
    if config.greedy:
        if not np.isfinite(z.max()):
            raise RWKVError("no token can be sampled: every logit is -inf or NaN (all banned?)")
        one = np.zeros(z.size)
        one[int(np.argmax(z))] = 1.0
        return one
    probs = softmax(z, config.temperature)
    probs = filter_top_k(probs, config.top_k)
    probs = filter_top_p(probs, config.top_p)
    probs = filter_typical(probs, config.typical_p)
    return filter_min_p(probs, config.min_p)


# -- step 5: draw ------------------------------------------------------------------------------
def draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    """One id from ``probs`` by inverse CDF over a single ``rng.random()`` draw."""
    cum = np.cumsum(probs)
    idx = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
    idx = min(idx, probs.size - 1)
    while probs[idx] == 0:  # rounding at the very top of the CDF: step back to a kept id
        idx -= 1
    return idx


def sample(
    logits: np.ndarray,
    config: SamplingConfig,
    rng: np.random.Generator,
    counts: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
) -> int:
    """Choose one token id from ``logits`` (shape ``(V,)``).

    ``counts`` are decayed occurrence counts for the penalties (see :class:`Sampler`) and
    ``allowed`` a boolean mask of ids that may be chosen. Greedy configs use no randomness.
    """
    probs = probabilities(logits, config, counts, allowed)
    if config.greedy:
        return int(np.argmax(probs))
    return draw(probs, rng)


def gpu_unsupported(config: SamplingConfig) -> list[str]:
    """The settings of ``config`` that sampling on the GPU (:meth:`Model.forward_sample`) does
    not apply: it does temperature, top_p, top_k and an allowed-id mask, in the same order as
    :func:`probabilities`, with one uniform draw per token as :func:`draw`."""
    defaults = (("min_p", 0.0), ("typical_p", 1.0), ("presence_penalty", 0.0), ("frequency_penalty", 0.0),
                ("repetition_penalty", 1.0))  # fmt: skip
    out = [f for f, default in defaults if getattr(config, f) != default]
    return out + [f for f in ("logit_bias", "banned") if getattr(config, f)]


# -- the stateful sampler ----------------------------------------------------------------------
_VALID_IDS: weakref.WeakKeyDictionary[Any, dict[int, np.ndarray]] = weakref.WeakKeyDictionary()


def _decodes(tokenizer: Any, ids: list[int]) -> bool:
    try:
        tokenizer.decode_bytes(ids)
    except (RWKVError, LookupError, TypeError, ValueError):
        return False
    return True


def valid_ids(tokenizer: Any, num_vocab: int) -> np.ndarray:
    """Boolean ``(num_vocab,)`` mask of ids that ``tokenizer`` can decode.

    Ids at or past ``tokenizer.vocab_size`` (padding rows of the model's head) and ids the
    vocabulary leaves unused (65530..65535 in the World vocabulary) are False. Cached per
    tokenizer object; do not modify the returned array.
    """
    try:
        cache = _VALID_IDS.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: no caching
        cache = {}
    if num_vocab in cache:
        return cache[num_vocab]
    n = min(int(getattr(tokenizer, "vocab_size", num_vocab)), num_vocab)
    mask = np.zeros(num_vocab, dtype=bool)
    if _decodes(tokenizer, list(range(n))):
        mask[:n] = True
    else:  # some id cannot be decoded: find which, one by one
        mask[:n] = [_decodes(tokenizer, [i]) for i in range(n)]
    mask.flags.writeable = False
    cache[num_vocab] = mask
    return mask


class Sampler:
    """A :class:`SamplingConfig` with its random generator and occurrence counts.

    Call it with logits to choose a token; the choice is counted (:meth:`accept`) for the
    penalties. One Sampler serves one sequence: the counts and the random stream belong to it.
    ``allowed`` is a boolean ``(V,)`` mask of ids that may be chosen (see :func:`valid_ids`).
    """

    def __init__(self, config: SamplingConfig | None = None, allowed: np.ndarray | None = None):
        self.config = config or SamplingConfig()
        self.allowed = allowed
        self.rng = np.random.default_rng(self.config.seed)
        self.counts: np.ndarray | None = None  # (V,) float64, created by the first accept

    @classmethod
    def for_model(cls, model: Any, config: SamplingConfig | None = None) -> Sampler:
        """A sampler that never picks an id the model's tokenizer cannot decode."""
        tok = getattr(model, "tokenizer", None)
        allowed = None if tok is None else valid_ids(tok, model.info.num_vocab)
        if allowed is not None and allowed.all():
            allowed = None
        return cls(config, allowed)

    def __call__(self, logits: np.ndarray) -> int:
        """Choose the next token from ``logits`` ``(V,)`` and count it."""
        token = sample(logits, self.config, self.rng, self.counts, self.allowed)
        self.accept(token, logits.shape[-1])
        return token

    def accept(self, token: int, vocab: int | None = None) -> None:
        """Count ``token`` as generated: decay every count, then add 1 to this token's."""
        if self.counts is None:
            self.counts = np.zeros(max(vocab or 0, token + 1), dtype=np.float64)
        elif token >= self.counts.size:
            self.counts = np.pad(self.counts, (0, token + 1 - self.counts.size))
        self.counts *= self.config.penalty_decay
        self.counts[token] += 1.0

    def observe(self, tokens: Sequence[int], vocab: int | None = None) -> None:
        """Count tokens that were not sampled (e.g. the prompt), as if generated in order."""
        for t in tokens:
            self.accept(int(t), vocab)

    def reset(self, seed: int | None = None) -> None:
        """Forget the counts; with ``seed``, restart the random stream from it."""
        self.counts = None
        if seed is not None:
            self.rng = np.random.default_rng(seed)
