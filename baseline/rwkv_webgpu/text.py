"""Token ids to text, incrementally: never emits half a UTF-8 character or any part of a stop string."""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import Any


class TextStream:
    """Feed generated token ids one by one; get back text that is safe to show.

    Stop strings are matched literally on the decoded text (also across token boundaries).
    Text that could still be the start of a stop string is held back until it cannot; the stop
    string itself is never emitted.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""
        self.stopped = False
        self.text = ""  # everything emitted so far

    def push(self, token: int) -> str:
        """Add one token; return the newly safe text ("" when nothing is safe yet)."""
        if self.stopped:
            return ""
        piece = self._decoder.decode(self.tokenizer.decode_bytes([token]))
        return self._release(self._held + piece)

    def finish(self) -> str:
        """End of generation: return what was held back (never a stop string)."""
        if self.stopped:
            return ""
        tail = self._decoder.decode(b"", final=True)
        text = self._held + tail
        self._held = ""
        cut = self._first_stop(text)
        if cut is not None:
            self.stopped = True
            text = text[:cut]
        self.text += text
        return text

    def _first_stop(self, text: str) -> int | None:
        found = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def _release(self, text: str) -> str:
        cut = self._first_stop(text)
        if cut is not None:
            self.stopped = True
            self._held = ""
            self.text += text[:cut]
            return text[:cut]
        keep = 0
        for s in self.stop:  # longest tail of text that is a proper prefix of a stop string
            for n in range(min(len(s) - 1, len(text)), keep, -1):
                if text.endswith(s[:n]):
                    keep = n
                    break
        out, self._held = (text[:-keep], text[-keep:]) if keep else (text, "")
        self.text += out
        return out
