"""JSON files a user keeps: read with one-line errors naming the file, written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medssl.errors import DataError


def read_json(path: str | Path, missing: str = "file not found", kind: type | None = dict) -> Any:
    """Parse a JSON file.

    Args:
        path: the file.
        missing: the message when it does not exist.
        kind: the type the top-level value must have (``None``: any).

    Raises:
        DataError: missing file, invalid JSON, or a top-level value of another type (naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(missing, path)
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"is not valid JSON ({exc})", path) from exc
    if kind is not None and not isinstance(value, kind):
        raise DataError(f"must be a JSON {'object' if kind is dict else kind.__name__}", path)
    return value


def write_json(path: str | Path, value: Any) -> Path:
    """Write ``value`` as indented JSON (trailing newline), atomically."""
    from medssl.core.atomic import write_atomic_text

    return write_atomic_text(path, json.dumps(value, indent=2) + "\n")
