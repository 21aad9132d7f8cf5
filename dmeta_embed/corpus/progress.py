"""One progress line on stderr: rows done, rows/s of this run, parts, ETA. Standard library only."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Rows and parts done out of a total; rewrites one line on a terminal, prints a line every
    ``every`` seconds elsewhere (logs, CI). ``rows_done``/``parts_done``: finished before this run."""

    def __init__(
        self,
        rows: int,
        parts: int,
        rows_done: int = 0,
        parts_done: int = 0,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        every: float | None = None,
    ) -> None:
        self.rows, self.parts = rows, parts
        self.rows_done, self.parts_done = rows_done, parts_done
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every if every is not None else (0.5 if self.tty else 10.0)
        self.start = time.perf_counter()
        self.new_rows = 0
        self._last = 0.0

    @property
    def rate(self) -> float:
        """Rows per second embedded by this run."""
        return self.new_rows / max(time.perf_counter() - self.start, 1e-9)

    def add(self, rows: int = 0, parts: int = 0) -> None:
        self.rows_done += rows
        self.new_rows += rows
        self.parts_done += parts
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            self._show()

    def _line(self) -> str:
        rate = self.rate
        left = self.rows - self.rows_done
        eta = f"  eta {left / rate:,.0f} s" if rate > 0 and left > 0 else ""
        pct = 100.0 * self.rows_done / max(self.rows, 1)
        return (
            f"embed-corpus: {self.rows_done:,}/{self.rows:,} rows ({pct:.0f}%)  "
            f"{self.parts_done}/{self.parts} parts  {rate:,.1f} rows/s{eta}"
        )

    def _show(self) -> None:
        if self.enabled:
            self.stream.write(("\r" if self.tty else "") + self._line() + ("" if self.tty else "\n"))
            self.stream.flush()

    def close(self) -> None:
        """Print the final line (always, so a finished run says its rate)."""
        if self.enabled:
            self.stream.write(("\r" if self.tty else "") + self._line() + "\n")
            self.stream.flush()
