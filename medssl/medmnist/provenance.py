"""Which code produced a result: the medssl version and, in a git checkout, the commit.

:func:`code_version` is stamped into every pretraining marker and the ``meta`` block of a MedMNIST
run, so a report says which code made each number (a resumed run may mix pretrainings of several
versions; the report lists each one's).
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__all__ = ["code_version"]


@functools.cache
def _git(package_dir: str) -> tuple[str | None, bool | None]:
    """``(short commit, uncommitted changes under the package)`` or ``(None, None)`` outside git."""
    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", package_dir, *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = run("rev-parse", "--short=12", "HEAD")
    if not commit:
        return None, None
    status = run("status", "--porcelain", "--untracked-files=no", "--", ".")
    return commit, (bool(status) if status is not None else None)


def code_version() -> str:
    """``"medssl 0.1.0 (git 26491fc0a1b2)"``; ``", uncommitted changes"`` when the package's files
    differ from that commit; the version alone when medssl is not run from a git checkout."""
    import medssl

    commit, dirty = _git(str(Path(medssl.__file__).resolve().parent))
    if commit is None:
        return f"medssl {medssl.__version__}"
    return f"medssl {medssl.__version__} (git {commit}{', uncommitted changes' if dirty else ''})"
