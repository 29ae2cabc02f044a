"""A dependency-free progress bar on stderr.

On a terminal it redraws one line (``name [#####-----] 3/6 12.4s point``); when stderr
is a file or pipe (CI logs) it prints one line per finished item instead.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Context manager counting `total` items of work.

    Arguments:
      total: number of items.
      label: what is being done (the experiment's name).
      enabled: False silences it.
      stream: where to draw (default stderr, read at construction).
      width: bar width in characters.
    """

    def __init__(
        self, total: int, label: str, *, enabled: bool = True, stream: TextIO | None = None, width: int = 24
    ) -> None:
        self.total, self.label, self.enabled, self.width = max(int(total), 0), label, enabled, width
        self.stream = sys.stderr if stream is None else stream
        self.done, self.detail, self.start = 0, "", time.monotonic()
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()

    def __enter__(self) -> Progress:
        self.start = time.monotonic()
        if self.tty:
            self._draw()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def describe(self, detail: str) -> None:
        """Say what is running now (shown on a terminal only)."""
        self.detail = detail
        if self.tty:
            self._draw()

    def advance(self, detail: str = "", n: int = 1) -> None:
        """Mark `n` items finished."""
        self.done = min(self.done + n, self.total)
        self.detail = detail
        if self.tty:
            self._draw()
        elif self.enabled:
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def _line(self) -> str:
        fraction = self.done / self.total if self.total else 1.0
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.monotonic() - self.start
        return f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:6.1f}s {self.detail}".rstrip()

    def _draw(self) -> None:
        self.stream.write("\r\033[K" + self._line())
        self.stream.flush()
