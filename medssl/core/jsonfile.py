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


def finite(value: Any, _path: str = "") -> tuple[Any, list[str]]:
    """``value`` with every NaN / infinite float replaced by ``None``, and the dotted keys where
    that happened: bare ``NaN`` is not valid JSON, and a reader must know a figure is undefined
    (e.g. HD95 of a class absent from a case) rather than zero."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None, [_path or "."]
    if isinstance(value, dict):
        out, bad = {}, []
        for k, v in value.items():
            out[k], b = finite(v, f"{_path}.{k}" if _path else str(k))
            bad += b
        return out, bad
    if isinstance(value, (list, tuple)):
        out, bad = [], []
        for i, v in enumerate(value):
            x, b = finite(v, f"{_path}.{i}" if _path else str(i))
            out.append(x)
            bad += b
        return out, bad
    return value, []


def dumps_finite(record: dict, **kwargs) -> str:
    """JSON of a record with non-finite numbers as ``null`` listed under ``"nonfinite"``."""
    clean, bad = finite(record)
    if bad:
        clean["nonfinite"] = bad
    return json.dumps(clean, allow_nan=False, **kwargs)


def write_json(path: str | Path, value: Any) -> Path:
    """Write ``value`` as indented JSON (trailing newline), atomically; non-finite numbers become
    ``null`` and are listed under ``"nonfinite"`` (:func:`dumps_finite`) for a dict."""
    from medssl.core.atomic import write_atomic_text

    text = dumps_finite(value, indent=2) if isinstance(value, dict) else json.dumps(value, indent=2, allow_nan=False)
    return write_atomic_text(path, text + "\n")
