"""Read the next case in a background thread while the reviewer works on this one.

One worker thread and one slot: asking for another case drops the previous request (cancelled
if not started, its result discarded otherwise), so at most the current case and the next one
are in memory. Reading is numpy/nibabel work that releases the GIL for decompression.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class Preloader:
    """``preload(name)`` starts reading; ``take(name)`` returns it (waiting if needed) or None."""

    def __init__(self, load: Callable[[str], object]):
        self._load = load
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medssl-preload")
        self._lock = threading.Lock()
        self._name: str | None = None
        self._future: Future | None = None

    @property
    def pending(self) -> str | None:
        """The case being (or already) read ahead."""
        return self._name

    def preload(self, name: str | None) -> None:
        with self._lock:
            if name == self._name:
                return
            if self._future is not None:
                self._future.cancel()
            self._name = name
            self._future = None if name is None else self._pool.submit(self._load, name)

    def take(self, name: str):
        """The preloaded case ``name`` (and the slot is emptied), or None if another was read.

        Raises:
            whatever reading raised (the caller reads it again in the foreground, or reports).
        """
        with self._lock:
            if name != self._name or self._future is None:
                return None
            fut, self._name, self._future = self._future, None, None
        return fut.result()

    def close(self) -> None:
        self.preload(None)
        self._pool.shutdown(wait=False, cancel_futures=True)
