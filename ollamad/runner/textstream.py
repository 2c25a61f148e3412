"""Generated token pieces → text that is safe to send, with stop sequences cut out.

A token's piece can end in the middle of a UTF-8 character, and the text sent so far can end in
the first characters of a stop sequence that the next tokens may complete. Both are held back
until the next piece decides: the client never sees half a character, nor the start of a stop
sequence that then stops the answer. The answer ends before the earliest stop sequence found.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        # "replace" turns bytes that can never become valid UTF-8 into U+FFFD at once, while
        # a character that is merely incomplete stays buffered in the decoder.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""
        self.stopped = False
        self.sent_bytes = 0

    def feed(self, piece: bytes) -> str:
        """The text that can be sent now that ``piece`` has arrived ("" once stopped)."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(piece)
        cut = self._earliest_stop(text)
        if cut is not None:
            self.stopped = True
            self._held = ""
            return self._send(text[:cut])
        hold = self._partial_stop_length(text)
        self._held = text[len(text) - hold:] if hold else ""
        return self._send(text[:len(text) - hold])

    def flush(self) -> str:
        """At the end of the answer: the held-back text. An incomplete last character is dropped."""
        text, self._held = self._held, ""
        return self._send(text)

    def _send(self, text: str) -> str:
        self.sent_bytes += len(text.encode())
        return text

    def _earliest_stop(self, text: str) -> int | None:
        found = [i for i in (text.find(stop) for stop in self._stops) if i >= 0]
        return min(found, default=None)

    def _partial_stop_length(self, text: str) -> int:
        """Length of the longest end of ``text`` that begins some stop sequence."""
        return max((n for stop in self._stops for n in range(len(stop) - 1, 0, -1)
                    if text.endswith(stop[:n])), default=0)
