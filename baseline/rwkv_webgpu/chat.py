"""Chat in the RWKV World format, keeping the conversation in the recurrent state.

The conversation is the text ``User: ...\\n\\nAssistant: ...\\n\\nUser: ...\\n\\nAssistant:``. Each turn
feeds only its own tokens: the state already holds everything before it, so a long conversation
costs no more per turn than a short one. The state right before the last answer is kept, so the
answer can be regenerated, and a conversation saves to a state file plus a JSON transcript.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from .errors import CheckpointError, RWKVError
from .generate import GenerationResult, GenerationStream, prompt_ids
from .sampling import Sampler, SamplingConfig, valid_ids

if TYPE_CHECKING:
    from .models.base import Model
    from .state import State

CHAT_FORMAT = "rwkv-webgpu-chat"
CHAT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ChatFormat:
    """How turns are written. The defaults are RWKV World's chat format."""

    user: str = "User"
    assistant: str = "Assistant"
    separator: str = "\n\n"
    stop: tuple[str, ...] = ("\n\n", "\nUser:", "\nAssistant:")

    def turn(self, message: str) -> str:
        """The text fed for one user message, ending where the assistant's answer begins."""
        # a blank line inside a message would read as the end of the turn
        text = re.sub(r"\n\s*\n", "\n", message.strip())
        return f"{self.user}: {text}{self.separator}{self.assistant}:"


@dataclass
class Turn:
    user: str
    assistant: str
    finish_reason: str = ""


@dataclass
class _Rewind:
    """Where the last answer started: the state before the turn's last prompt token."""

    state: State
    tokens: int  # len(Chat.tokens) at that point
    last_token: int
    message: str
    turn: int  # index of the answer's turn
    attempts: int = 0


class Chat:
    """A conversation with ``model`` (which needs a tokenizer).

    ``sampling.seed`` makes the whole conversation reproducible: answer k, attempt a is drawn with
    ``numpy.random.default_rng([seed, k, a])``; penalty counts start afresh with each answer
    (as in ChatRWKV). ``system`` is text fed before the first turn.
    ``tokens`` lists every token fed to ``state`` so far, ``turns`` the conversation.
    """

    def __init__(
        self,
        model: Model,
        *,
        sampling: SamplingConfig | None = None,
        max_tokens: int = 500,
        system: str = "",
        format: ChatFormat | None = None,
    ):
        if model.tokenizer is None:
            raise RWKVError("chat needs a model with a tokenizer (load_model(..., tokenizer=PATH))")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.model = model
        self.sampling = sampling or SamplingConfig()
        self.max_tokens = max_tokens
        self.system = system
        self.format = format or ChatFormat()
        self.state = model.new_state()
        self.tokens: list[int] = []
        self.turns: list[Turn] = []
        self.last: GenerationResult | None = None  # the last answer's result
        self._rewind: _Rewind | None = None
        self._allowed = valid_ids(model.tokenizer, model.info.num_vocab)

    # -- talking -------------------------------------------------------------------------------
    def send(self, message: str) -> str:
        """The assistant's answer to ``message`` (the conversation moves on)."""
        return "".join(self.send_stream(message))

    def send_stream(self, message: str) -> Iterator[str]:
        """Like :meth:`send`, yielding the answer in pieces."""
        text = self._opening() + self.format.turn(message)
        ids = prompt_ids(self.model, text)
        self._feed(ids[:-1])
        self._rewind = _Rewind(
            self.state.clone(), len(self.tokens), ids[-1], message, len(self.turns)
        )
        return self._answer(len(ids), None)

    def regenerate(self, seed: int | None = None) -> str:
        """Answer the last message again, from the state saved before its answer."""
        return "".join(self.regenerate_stream(seed))

    def regenerate_stream(self, seed: int | None = None) -> Iterator[str]:
        """Like :meth:`regenerate`, yielding pieces. ``seed`` draws as a chat started with that seed
        did on its first try (so the chat's own seed gives back the first answer); without it, each
        call is a new attempt."""
        rw = self._rewind
        if rw is None:
            raise RWKVError("there is no answer to regenerate yet")
        del self.turns[rw.turn :]
        self.state = rw.state.clone()
        del self.tokens[rw.tokens :]
        rw.attempts += 1
        return self._answer(1, seed)

    def _opening(self) -> str:
        """Text before the next turn: the system text first, else the separator the state lacks."""
        if not self.tokens:
            return self.system.rstrip("\n") + self.format.separator if self.system else ""
        sep = self.format.separator
        tail = self.model.tokenizer.decode(self.tokens[-len(sep) * 2 :])
        for n in range(len(sep), 0, -1):
            if tail.endswith(sep[:n]):
                return sep[n:]
        return sep

    def _feed(self, ids: Sequence[int]) -> np.ndarray | None:
        if not ids:
            return None
        self.tokens.extend(ids)
        return self.model.forward(ids, self.state)

    def _answer(self, prompt_tokens: int, seed: int | None) -> Iterator[str]:
        rw = self._rewind
        assert rw is not None
        logits = self._feed([rw.last_token])
        base = self.sampling.seed if seed is None else seed
        attempt = rw.attempts if seed is None else 0
        sampler = Sampler(self.sampling, self._allowed)
        sampler.rng = np.random.default_rng(None if base is None else [base, rw.turn, attempt])
        stream = GenerationStream(
            self.model, self.state, logits=logits, sampler=sampler, max_tokens=self.max_tokens,
            stop=self.format.stop, prompt_tokens=prompt_tokens,
        )  # fmt: skip
        return self._record(rw.message, stream)

    def _record(self, message: str, stream: GenerationStream) -> Iterator[str]:
        try:
            yield from stream
        finally:  # also when the caller stops early: the state holds what was generated
            self.tokens.extend(stream.tokens)
            self.last = stream.result if stream.done else None
            reason = self.last.finish_reason if self.last else "cancelled"
            self.turns.append(Turn(message, stream.text.strip(), reason))

    def reset(self) -> None:
        """Forget the conversation."""
        self.state = self.model.new_state()
        self.tokens = []
        self.turns = []
        self._rewind = None
        self.last = None

    def transcript(self) -> str:
        """The conversation as text, in the chat format."""
        parts = [self.system.rstrip("\n")] if self.system else []
        for t in self.turns:
            parts.append(f"{self.format.turn(t.user)} {t.assistant}")
        return self.format.separator.join(parts)

    # -- files -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the state to ``path`` (slot 0: now; slot 1: before the last answer) and the
        transcript to ``path + ".json"``; returns the JSON file's path."""
        both = self.model.new_state(2)
        self.state.copy_slot(0, 0, both)
        (self._rewind.state if self._rewind else self.state).copy_slot(0, 1, both)
        both.save(path)
        meta: dict[str, Any] = {
            "format": CHAT_FORMAT,
            "format_version": CHAT_FORMAT_VERSION,
            "model": self.model.info.describe(),
            "system": self.system,
            "chat_format": asdict(self.format),
            "turns": [asdict(t) for t in self.turns],
            "tokens": self.tokens,
            "rewind": None
            if self._rewind is None
            else {"tokens": self._rewind.tokens, "last_token": self._rewind.last_token,
                  "message": self._rewind.message, "turn": self._rewind.turn,
                  "attempts": self._rewind.attempts},
        }  # fmt: skip
        out = Path(os.fspath(path) + ".json")
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, out)
        return out

    def load(self, path: str | os.PathLike[str]) -> None:
        """Replace this conversation with one written by :meth:`save` (same model shape)."""
        side = Path(os.fspath(path) + ".json")
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"no transcript {side} beside the state file {path}") from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read the chat transcript {side}: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != CHAT_FORMAT:
            raise CheckpointError(f"{side} is not a saved rwkv-webgpu chat")
        both = self.model.load_state(path)
        if both.batch_size != 2:
            raise CheckpointError(f"{path} holds {both.batch_size} slot(s); a saved chat holds 2")
        self.state = both.extract(0)
        self.tokens = [int(t) for t in meta.get("tokens", [])]
        self.turns = [Turn(**t) for t in meta.get("turns", [])]
        self.system = str(meta.get("system", ""))
        fmt = meta.get("chat_format", {})
        self.format = ChatFormat(
            str(fmt["user"]), str(fmt["assistant"]), str(fmt["separator"]), tuple(fmt["stop"])
        )
        rw = meta.get("rewind")
        self._rewind = None
        if rw:
            self._rewind = _Rewind(both.extract(1), int(rw["tokens"]), int(rw["last_token"]), str(rw["message"]),
                                   int(rw["turn"]), int(rw.get("attempts", 0)))  # fmt: skip


REPL_HELP = """commands:
  +          answer the last message again (a new draw)
  + N        answer it again as with seed N (with the chat's own seed: its first answer)
  /save PATH save the conversation (PATH holds the state, PATH.json the transcript)
  /load PATH continue a saved conversation
  /reset     start over
  /help      this list
  -          quit"""


def repl(chat: Chat, read: Callable[[str], str], out: TextIO) -> int:
    """The chat loop of ``rwkv-webgpu chat``: ``read(prompt)`` returns a line (EOFError ends)."""
    who = chat.format
    while True:
        try:
            line = read(f"{who.user}: ")
        except EOFError:
            out.write("\n")
            return 0
        cmd = line.strip()
        if not cmd:
            continue
        if cmd == "-":
            return 0
        try:
            pieces = _repl_command(chat, cmd, out)
            if pieces is None:
                continue
            out.write(f"{who.assistant}:")
            try:
                for piece in pieces:
                    out.write(piece)
                    out.flush()
            except KeyboardInterrupt:  # Ctrl-C stops the answer, not the chat
                out.write(" [stopped]")
            out.write("\n\n")
        except RWKVError as exc:  # a bad path or seed must not end the conversation
            out.write(f"error: {exc}\n")
        out.flush()


def _repl_command(chat: Chat, cmd: str, out: TextIO) -> Iterator[str] | None:
    """Run a command, or start the answer to a message (the pieces to print)."""
    word, _, rest = cmd.partition(" ")
    rest = rest.strip()
    if word == "+":
        if rest and not rest.isdigit():
            raise RWKVError(f"+ takes a seed (a number), not {rest!r}")
        return chat.regenerate_stream(int(rest) if rest else None)
    if word in ("/save", "/load"):
        if not rest:
            raise RWKVError(f"{word} needs a path")
        if word == "/save":
            side = chat.save(rest)
            out.write(f"saved the conversation to {rest} (+ {side.name})\n")
        else:
            chat.load(rest)
            out.write(f"loaded {rest}: {len(chat.turns)} turn(s), {len(chat.tokens)} tokens\n")
        return None
    if word == "/reset":
        chat.reset()
        out.write("(a new conversation)\n")
        return None
    if word == "/help":
        out.write(REPL_HELP + "\n")
        return None
    return chat.send_stream(cmd.replace("\\n", "\n"))
