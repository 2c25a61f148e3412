"""The REPL's input history, kept in ``~/.ollama/history`` by Ollama's rules.

One entry a line, the last 100 kept, the file (mode 0600) rewritten through a temporary file after
every entry. Disabled history (``OLLAMA_NOHISTORY``, ``/set nohistory``) still remembers entries
for the arrow keys of this session but writes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

LIMIT = 100


def history_path(home: Path) -> Path:
    return home / ".ollama" / "history"


class History:
    def __init__(self, path: Path, enabled: bool = True, limit: int = LIMIT) -> None:
        self.path = path
        self.enabled = enabled
        self.limit = limit
        self.entries: list[str] = []

    @classmethod
    def load(cls, path: Path, enabled: bool = True) -> History:
        """The history in ``path``, creating the file (0600) if it is missing, as Ollama does."""
        history = cls(path, enabled)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDONLY, 0o600)
        with os.fdopen(fd, encoding="utf-8", errors="replace", newline="") as file:
            text = file.read()
        # Only complete lines count: Ollama reads up to each newline and drops an unfinished tail.
        for line in text.split("\n")[:-1]:
            if line := line.strip():
                history.entries.append(line)
        history._compact()
        return history

    def add(self, line: str) -> None:
        self.entries.append(line)
        self._compact()
        self.save()

    def save(self) -> None:
        if not self.enabled:
            return
        temp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as file:
            file.write("".join(entry + "\n" for entry in self.entries))
        os.replace(temp, self.path)

    def _compact(self) -> None:
        del self.entries[:-self.limit]
