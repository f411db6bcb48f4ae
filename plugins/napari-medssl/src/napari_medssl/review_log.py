"""``review_log.jsonl``: the append-only audit trail of a review, one JSON object per line.

Every action (open, accept, reject, edit, reset) is appended with the time, reviewer and case;
a line is written in one ``write`` on a file opened for appending and flushed to disk, so
concurrent readers see whole lines and nothing earlier is ever rewritten. The log holds case
names and file hashes only, never DICOM tags.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

LOG_NAME = "review_log.jsonl"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def append(export_dir: str | Path, action: str, case: str | None, reviewer: str | None, **fields) -> dict:
    """Append one entry ``{"time", "action", "case", "reviewer", **fields}``; returns it."""
    entry = {"time": now(), "action": action, "case": case, "reviewer": reviewer, **fields}
    line = json.dumps(entry, sort_keys=False, allow_nan=False) + "\n"
    path = Path(export_dir) / LOG_NAME
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # the umask decides
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry


def read(export_dir: str | Path) -> list[dict]:
    """All entries, oldest first (an absent log is empty).

    Raises:
        ValueError: a line that is not JSON (naming the file and line number).
    """
    path = Path(export_dir) / LOG_NAME
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {i} is not JSON ({exc.msg})") from None
    return out
