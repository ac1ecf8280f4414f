"""Streamed output (exec channels, a child's pipe) arrives in chunks that
split lines anywhere; job logs want whole lines.  ``LineSplitter`` turns the
one into the other."""

from __future__ import annotations

from collections.abc import Callable


class LineSplitter:
    """Feed chunks; ``on_line`` receives each complete line (without its
    ``\\n`` or a trailing ``\\r``), and ``close()`` flushes a last line that
    had no newline.  ``lines`` keeps every line when ``keep`` is set."""

    def __init__(self, on_line: Callable[[str], None] | None = None, *, keep: bool = False):
        self.on_line = on_line
        self.keep = keep
        self.lines: list[str] = []
        self._buffer = ""

    def feed(self, chunk: str) -> None:
        if not chunk or (self.on_line is None and not self.keep):
            return
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split("\n")
        for line in complete:
            self._emit(line.rstrip("\r"))

    def close(self) -> None:
        if self._buffer:
            self._emit(self._buffer)
        self._buffer = ""

    def _emit(self, line: str) -> None:
        if self.keep:
            self.lines.append(line)
        if self.on_line is not None:
            self.on_line(line)
