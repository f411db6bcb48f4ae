"""Progress of a batch over cases: a tqdm bar on a terminal, plain lines in a log.

On a terminal (:func:`medssl.core.runtime.interactive`) a tqdm bar on stderr shows cases done,
seconds per case and time left. Otherwise (a log file, a cluster job) a plain line goes to stderr
every ``every`` cases or ``seconds`` seconds, whichever comes first: bars' carriage returns are
noise in a log. Seconds per case count the predicted cases only: a resumed run skips finished
cases in milliseconds, which would make the estimate of the time left far too short.
"""

from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class CaseProgress:
    """Cases done, seconds per predicted case and time left.

    Args:
        total: cases of this process.
        bar: draw a tqdm bar (else plain lines).
        every: plain mode: a line every this many cases...
        seconds: ...or after this many seconds since the last line.
        label: the first word of each line / the bar's description.
        stream: where the lines go (default stderr).
    """

    def __init__(self, total: int, bar: bool, every: int = 10, seconds: float = 30.0, label: str = "infer", stream=None):
        self.total, self.every, self.seconds, self.label = total, max(1, every), seconds, label
        self.stream = stream if stream is not None else sys.stderr
        self.done = self.predicted = 0
        self.predict_seconds = 0.0
        self._last_line, self._last_done = time.monotonic(), 0
        self._bar = None
        if bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=label, unit="case", file=self.stream)

    def seconds_per_case(self) -> float | None:
        return self.predict_seconds / self.predicted if self.predicted else None

    def text(self) -> str:
        spc = self.seconds_per_case()
        parts = [f"{self.label}: {self.done}/{self.total} cases"]
        if spc is not None:
            parts.append(f"{spc:.1f} s/case")
            parts.append(f"about {_duration(spc * (self.total - self.done))} left")
        return ", ".join(parts)

    def update(self, seconds: float | None) -> None:
        """One case finished: predicted in ``seconds``, or skipped / failed (``None``)."""
        self.done += 1
        if seconds is not None:
            self.predicted += 1
            self.predict_seconds += seconds
        if self._bar is not None:
            spc = self.seconds_per_case()
            if spc is not None:
                self._bar.set_postfix_str(f"{spc:.1f} s/case, {_duration(spc * (self.total - self.done))} left")
            self._bar.update(1)
            return
        now = time.monotonic()
        if self.done - self._last_done >= self.every or now - self._last_line >= self.seconds or self.done == self.total:
            print(self.text(), file=self.stream, flush=True)
            self._last_line, self._last_done = now, self.done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
