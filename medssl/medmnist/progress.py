"""Progress of a MedMNIST run: bars on a terminal, plain periodic lines elsewhere.

In a log file (stderr is not a terminal, or bars are turned off) tqdm's carriage returns are
noise and a long run would otherwise be silent for minutes; :class:`Progress` then prints one
timestamped line per event that matters (a stage starts, a pretraining finishes) and rate-limited
lines (at most one every ``every_s`` seconds) for the frequent ones (pretraining epochs,
fine-tuning epochs, records).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "LINE_EVERY_S"]

#: seconds between two rate-limited progress lines
LINE_EVERY_S = 60.0


class Progress:
    """Where the messages of a run go.

    Args:
        bars: draw tqdm bars (a terminal); ``False``: plain lines.
        quiet: print nothing at all (library use, tests).
        every_s: at least this many seconds between two :meth:`tick` lines.
        stream: where lines go (default ``sys.stderr``, looked up when printing).
    """

    def __init__(self, bars: bool, quiet: bool = False, every_s: float = LINE_EVERY_S, stream: TextIO | None = None):
        self.bars, self.quiet, self.every_s, self._stream = bool(bars) and not quiet, quiet, every_s, stream
        self._last = -float("inf")

    @property
    def lines(self) -> bool:
        """Plain lines are printed (no bars, not quiet)."""
        return not self.bars and not self.quiet

    def log(self, msg: str) -> None:
        """An event: always shown (above the bars, or as a timestamped line)."""
        if self.quiet:
            return
        if self.bars:
            from tqdm.auto import tqdm

            tqdm.write(msg)
            return
        stream = self._stream or sys.stderr
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=stream, flush=True)

    def tick(self, msg: str, force: bool = False) -> bool:
        """A frequent update: a line only without bars, and at most one every ``every_s`` seconds
        (``force``: now). Returns whether it was printed."""
        if not self.lines:
            return False
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return False
        self._last = now
        self.log(msg)
        return True
